//! The sync socket between the launcher and the child it clones: one SOCK_SEQPACKET
//! message at a time, each with the descriptors it carries. Both ends frame messages
//! the same way, so both send and receive through these two functions.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    recv, recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::cgroup::NEEDED;

/// The most descriptors one message carries: the go message's `tasks` files, at most
/// one per controller petri limits (`cgroup::NEEDED`), or the plan's three (the scratch
/// tmpfs, /dev and the root).
const MAX_FDS: usize = if NEEDED.len() > 3 { NEEDED.len() } else { 3 };

/// Sends `bytes` with `fds` (at most [`MAX_FDS`]) as one message. A closed peer is an
/// error (EPIPE), never a SIGPIPE.
pub fn send(sock: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd]) -> rustix::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::NOBUFS);
    }
    sendmsg(sock, &[io::IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL).map(drop)
}

/// Receives one message whole (a peek with MSG_TRUNC tells its length first) with the
/// descriptors it carries; EOF gives no bytes and no descriptors, a truncated message
/// is an error.
///
/// A peer that exits with a message of ours unread (a child that failed before reading
/// the launcher's last word, say) resets the connection: the first read then reports
/// ECONNRESET, once, and what the peer sent before it exited is still queued behind
/// it, so the read is tried again.
pub fn receive(sock: &OwnedFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    loop {
        match receive_once(sock) {
            Err(e) if e.raw_os_error() == Some(Errno::CONNRESET.raw_os_error()) => continue,
            other => return other,
        }
    }
}

fn receive_once(sock: &OwnedFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let (_, len) = recv(sock, &mut [0u8; 0], RecvFlags::PEEK | RecvFlags::TRUNC)?;
    let mut buf = vec![0u8; len];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        sock,
        &mut [io::IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC) {
        return Err(io::Error::other("a message was truncated"));
    }
    buf.truncate(got.bytes);
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok((buf, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap()
    }

    #[test]
    fn messages_and_descriptors_arrive_whole() {
        let (a, b) = pair();
        let (x, _y) = pair();
        send(&a, &[7u8; 10_000], &[x.as_fd(), x.as_fd()]).unwrap();
        let (bytes, fds) = receive(&b).unwrap();
        assert_eq!((bytes.len(), fds.len()), (10_000, 2));
        drop(a);
        let (bytes, fds) = receive(&b).unwrap();
        assert!(bytes.is_empty() && fds.is_empty(), "EOF");
    }

    #[test]
    fn a_peer_gone_with_our_message_unread_still_gets_its_last_word_read() {
        let (ours, theirs) = pair();
        send(&theirs, b"125:it failed", &[]).unwrap();
        send(&ours, b"L", &[]).unwrap();
        drop(theirs);
        assert_eq!(receive(&ours).unwrap().0, b"125:it failed");
        assert!(receive(&ours).unwrap().0.is_empty(), "then EOF");
    }
}
