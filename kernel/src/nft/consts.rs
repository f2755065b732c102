//! Kernel, libnftnl and nft(8) constants that `libc` lacks (or types as `c_int`).
#![forbid(unsafe_code)]

// <linux/netfilter.h>
pub const NFPROTO_INET: u16 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: u32 = 1;
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_IN: u32 = 1;
pub const NF_INET_LOCAL_OUT: u32 = 3;
// <linux/netfilter/nf_tables.h>: message types
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
// registers: NFT_REG_1 is 16 bytes wide, NFT_REG32_xx are its 4-byte slices
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG32_01: u32 = 9;
pub const NFT_REG32_02: u32 = 10;
pub const NFT_REG32_03: u32 = 11;
// verdicts
pub const NFT_JUMP: i32 = -3;
/// `NFT_GOTO`: to a chain, not coming back
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;
// sets and objects
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_MAP: u32 = 0x8;
pub const NFT_SET_CONCAT: u32 = 0x80;
pub const NFT_LOOKUP_F_INV: u32 = 1;
/// `NFT_REJECT_TCP_RST`: `reject with tcp reset`
pub const NFT_REJECT_TCP_RST: u32 = 1;
// expressions
pub const NFT_META_MARK: u32 = 3;
/// `NFT_META_IIF`: the input interface's index
pub const NFT_META_IIF: u32 = 4;
pub const NFT_META_IIFNAME: u32 = 6;
pub const NFT_META_NFPROTO: u32 = 15;
pub const NFT_META_L4PROTO: u32 = 16;
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub const NFT_CMP_EQ: u32 = 0;
pub const NFT_CMP_NEQ: u32 = 1;
pub const NFT_BYTEORDER_HTON: u32 = 1;
pub const NFT_CT_STATE: u32 = 0;
/// `NFT_CT_DIRECTION`: one byte, `IP_CT_DIR_ORIGINAL` (0) or `IP_CT_DIR_REPLY` (1)
pub const NFT_CT_DIRECTION: u32 = 1;
/// `IP_CT_DIR_ORIGINAL`
pub const IP_CT_DIR_ORIGINAL: u8 = 0;
pub const NFT_CT_STATUS: u32 = 2;
/// `NFT_CT_PROTO_DST`: the transport destination port of a direction's tuple
pub const NFT_CT_PROTO_DST: u32 = 12;
pub const NFTA_FIB_F_DADDR: u32 = 1 << 1;
pub const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
pub const RTN_LOCAL: u32 = 2;
/// `NF_CT_STATE_BIT(IP_CT_NEW)`
pub const CT_STATE_NEW: u32 = 1 << 3;
pub const IPS_DST_NAT: u32 = 1 << 5;
pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
// <linux/netlink.h>
pub const NLMSG_MIN_TYPE: u16 = 0x10;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NETLINK_CAP_ACK: i32 = 10;
pub const NETLINK_EXT_ACK: i32 = 11;
// nft(8) datatypes (src/datatype.h), byte orders and expression types
pub const TYPE_NFPROTO: u32 = 2;
pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;
pub const TYPE_INET_PROTOCOL: u32 = 12;
pub const TYPE_INET_SERVICE: u32 = 13;
pub const TYPE_MARK: u32 = 19;
pub const TYPE_IFNAME: u32 = 41;
pub const TYPE_BITS: u32 = 6;
pub const BYTEORDER_INVALID: u32 = 0;
pub const BYTEORDER_HOST: u32 = 1;
pub const BYTEORDER_BIG: u32 = 2;
pub const EXPR_CONCAT: u32 = 13;
// libnftnl udata.h
pub const UDATA_SET_KEYBYTEORDER: u8 = 0;
pub const UDATA_SET_DATABYTEORDER: u8 = 1;
pub const UDATA_SET_KEY_TYPEOF: u8 = 3;
pub const UDATA_SET_DATA_INTERVAL: u8 = 6;
pub const UDATA_SET_TYPEOF_EXPR: u8 = 0;
pub const UDATA_SET_TYPEOF_DATA: u8 = 1;
/// `NFTNL_UDATA_SET_ELEM_COMMENT`: an element's comment in its userdata.
pub const UDATA_SET_ELEM_COMMENT: u8 = 0;
