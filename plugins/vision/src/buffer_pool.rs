//! A few large buffers, each back in the pool when the one using it is dropped: a window's pixel
//! buffer (`window_buffers.rs`) and `--decode gpu`'s device buffers (`device_buffers.rs`). The
//! pipeline drops a window's rows only after the device is done with them, so a buffer that
//! comes back is free to be written again.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

pub struct Pool<T> {
    kept: Arc<Mutex<Vec<T>>>,
    /// Buffers kept at most; beyond, a returned one is freed.
    limit: usize,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool { kept: self.kept.clone(), limit: self.limit }
    }
}

impl<T> Pool<T> {
    pub fn new(limit: usize) -> Pool<T> {
        Pool { kept: Arc::new(Mutex::new(Vec::new())), limit }
    }

    /// A kept buffer that `fits`, else a new one from `make`.
    pub fn take(&self, fits: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> Pooled<T> {
        let kept = {
            let mut kept = self.lock();
            kept.iter().position(fits).map(|i| kept.swap_remove(i))
        };
        Pooled { item: Some(kept.unwrap_or_else(make)), home: self.clone() }
    }

    /// Buffers waiting to be taken again.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A buffer taken from a [`Pool`], returned to it when dropped.
pub struct Pooled<T> {
    /// `Some` until dropped.
    item: Option<T>,
    home: Pool<T>,
}

impl<T> Deref for Pooled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item.as_ref().expect("present until dropped")
    }
}

impl<T> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item.as_mut().expect("present until dropped")
    }
}

impl<T> Drop for Pooled<T> {
    fn drop(&mut self) {
        let mut kept = self.home.lock();
        if kept.len() < self.home.limit {
            kept.extend(self.item.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_that_fits_is_taken_again_and_at_most_limit_are_kept() {
        let pool: Pool<Vec<u8>> = Pool::new(2);
        let first = pool.take(|_| true, || vec![7; 10]);
        drop(first);
        assert_eq!(pool.kept(), 1);
        let too_small = pool.take(|b| b.len() >= 20, || vec![0; 20]);
        assert_eq!((too_small.len(), pool.kept()), (20, 1), "the small one stays kept");
        let again = pool.take(|b| b.len() >= 5, || vec![0; 5]);
        assert_eq!(again[0], 7, "the returned one, as it was");
        let many: Vec<Pooled<Vec<u8>>> = (0..4).map(|_| pool.take(|_| false, Vec::new)).collect();
        drop((many, too_small, again));
        assert_eq!(pool.kept(), 2);
    }
}
