//! portd: the privileged daemon that keeps portd's nftables table in the kernel.

pub mod kernel;
pub mod netlink;
pub mod nft;
