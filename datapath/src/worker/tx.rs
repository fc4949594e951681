//! A worker's transmit step: one batch of frames handed to the kernel with as few
//! `sendmmsg` calls as it allows, with bounded retries when the device is busy.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::os::fd::AsFd;

use super::{SMALL, TX_RETRY_BUDGET, Worker};
use crate::counters::DropReason;
use crate::sys::{TxBatch, TxFrame};

impl Worker {
    /// Sends `frames` in as few `sendmmsg` calls as the kernel allows. A frame the kernel
    /// refuses outright (EMSGSIZE, EINVAL…) is counted and skipped; EAGAIN/ENOBUFS are
    /// retried within a bounded budget.
    pub(super) fn transmit(&mut self, tx: &mut TxBatch, frames: &[TxFrame]) {
        let mut next = 0;
        let mut budget = TX_RETRY_BUDGET;
        while next < frames.len() {
            let [small, large] = &self.ports;
            let rings = [small.ring.map(), large.ring.map()];
            match tx.send(&small.sock, rings, &frames[next..]) {
                Ok(sent) if sent > 0 => next += sent,
                Ok(_) => budget = budget.saturating_sub(1),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN | libc::ENOBUFS) if budget > 0 => {
                        budget -= 1;
                        self.wait_writable();
                    }
                    Some(libc::EAGAIN | libc::ENOBUFS) => {
                        for _ in next..frames.len() {
                            self.shared.drops.count(self.index, DropReason::TxError);
                        }
                        return;
                    }
                    _ => {
                        self.shared.drops.count(self.index, DropReason::TxError);
                        next += 1;
                    }
                },
            }
            if budget == 0 && next < frames.len() {
                // Only reachable through repeated zero-length sends: give up on the rest.
                for _ in next..frames.len() {
                    self.shared.drops.count(self.index, DropReason::TxError);
                }
                return;
            }
        }
    }

    fn wait_writable(&self) {
        let mut fds = [PollFd::new(
            self.ports[SMALL].sock.as_fd(),
            PollFlags::POLLOUT,
        )];
        // Either outcome leads to another bounded attempt; an error here shows up there.
        if poll(&mut fds, PollTimeout::from(1u8)).is_err() {
            std::thread::yield_now();
        }
    }
}
