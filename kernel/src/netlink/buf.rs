//! A byte buffer aligned for netlink headers: libnftnl and libmnl read `struct nlmsghdr`
//! in place, so what they parse or write must start on an 8-byte boundary.

/// A zeroed byte buffer with the alignment of `u64`.
pub struct AlignedBuf(Vec<u64>);

impl AlignedBuf {
    /// A zeroed buffer of at least `bytes` bytes.
    pub fn new(bytes: usize) -> AlignedBuf {
        AlignedBuf(vec![0; bytes.div_ceil(8)])
    }

    /// Start of the buffer, for C functions that read it.
    pub fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr().cast()
    }

    /// Start of the buffer, for C functions that write it.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }

    /// The buffer as bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the pointer and length describe the Vec's own initialised u64s, viewed as
        // bytes (u8 has no alignment or validity requirement); the borrow of `self` keeps
        // the Vec alive and unmodified for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.0.len() * 8) }
    }

    /// The buffer as mutable bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; the exclusive borrow of `self` makes the slice the only
        // access, and any bytes written form valid u64s.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.0.len() * 8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_rounded_up() {
        let mut b = AlignedBuf::new(13);
        assert_eq!(b.bytes().len(), 16);
        assert_eq!(b.as_ptr() as usize % 8, 0);
        b.bytes_mut()[12] = 7;
        assert_eq!(b.bytes()[12], 7);
    }
}
