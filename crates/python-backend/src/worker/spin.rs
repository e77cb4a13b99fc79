//! Reading the bridge's frames: a short, bounded spin of non-blocking reads
//! before a read parks in the runtime's reactor.
//!
//! Why. A sequential caller's round trip is two threads taking turns: the
//! runtime thread that writes a request and reads the reply, and the bridge
//! process. When each parks after its turn, every round trip wakes the other
//! side, and the kernel places a woken task on its previous CPU whenever
//! that CPU is idle. Once the two sit on different CPUs they stay there, and
//! each round trip then wakes an idle CPU twice; on a VM an idle vCPU is
//! halted, and waking it costs tens of microseconds. Measured on the 2-vCPU
//! VM the bench runs on (`benches/python.rs`, and `perf sched` traces): a
//! small echo took 14–15 µs with the pair on one CPU and 45–100 µs for the
//! rest of the run once it split, which it did in some runs and not others
//! (the 3.5–3.9× runs of issue 11); a blocking client splits the same way.
//!
//! A reader that keeps polling while the bridge works never parks, so the
//! reply wakes nobody: with the pair split, one of the two wake-ups is gone
//! (27–37 µs instead of 45–100, and the pair often came back together after
//! a few hundred calls); on one CPU, where the bridge is woken beside its
//! reader, the reader yields the CPU to it on every poll, so nothing waits
//! for the spin (13–15 µs).
//!
//! What makes that hold:
//! * the pipe is taken out of the reactor while the read spins and put back
//!   only when a read has to park. Registered, every reply would also wake
//!   the runtime thread that sits in `epoll_wait` (there is one whenever the
//!   runtime has an idle worker), for nothing: measured, 19 µs instead of 14;
//! * each poll is followed by `sched_yield`, so a bridge that shares the
//!   reader's CPU runs at once instead of after the spin; on an otherwise
//!   idle CPU the call returns at once;
//! * the spin is bounded ([`read_spin`](crate::PythonConfig::read_spin),
//!   50 µs by default, above the longest waits measured with the pair
//!   split, about 30 µs) and backs off after one that ran out: the next 1,
//!   3, 7 … 63 reads park at once, so a slow handler costs one spin in 64
//!   calls at most;
//! * only a read that began while no other read of a frame was in progress
//!   in the process spins, so at most one thread spins at a time. Many
//!   callers on few workers still spin on most reads (their reads seldom
//!   overlap), and gain from it: with 64 callers on 2 workers each of the
//!   runtime's threads parked on about 3% of calls instead of about 30%,
//!   and the bench's throughput went from about 50,000 to 80,000–110,000
//!   calls/s.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;

use crate::frame::{Decoder, Frame, FrameError};

use super::pipes::Capacity;

/// After this many spins in a row ran out, `2^MAX_BACKOFF - 1` reads park
/// at once before the next spin.
const MAX_BACKOFF: u32 = 6;

/// Reads of a frame in progress in this process, across all sessions.
static READING: AtomicUsize = AtomicUsize::new(0);

/// A frame read's outcome: an I/O error, or what the decoder made of it
/// (`Ok(None)`: end of stream between frames).
pub(super) type Polled = io::Result<Result<Option<Frame>, FrameError>>;

/// The bridge's stdout, in the reactor or out of it.
#[derive(Debug)]
enum Pipe {
    /// Registered with the runtime's reactor: a read can park on it.
    Registered(pipe::Receiver),
    /// Out of the reactor (non-blocking still): bytes arriving wake nobody.
    Bare(OwnedFd),
    /// Moving in or out of the reactor failed; the pipe is closed.
    Lost,
}

/// Reads frames from a bridge's stdout, spinning before parking when that
/// pays (see the module docs).
#[derive(Debug)]
pub(super) struct FrameReader {
    pipe: Pipe,
    /// How long a read may spin; zero: never.
    budget: Duration,
    /// Spins in a row that ran out.
    misses: u32,
    /// Reads left that park without spinning.
    skip: u32,
    /// The pipe's capacity, grown while large frames come in.
    capacity: Capacity,
}

impl FrameReader {
    /// A reader of `pipe` that does not spin until given a budget.
    pub(super) fn new(pipe: pipe::Receiver) -> Self {
        FrameReader {
            pipe: Pipe::Registered(pipe),
            budget: Duration::ZERO,
            misses: 0,
            skip: 0,
            capacity: Capacity::default(),
        }
    }

    /// Spin up to `budget` per read from now on (zero: never).
    pub(super) fn set_budget(&mut self, budget: Duration) {
        self.budget = budget;
        self.misses = 0;
        self.skip = 0;
    }

    /// Read one frame into `decoder`: spin first if it is worth it, then
    /// wait in the reactor. Cancel-safe: all progress is in `decoder`.
    pub(super) async fn read_frame(&mut self, decoder: &mut Decoder) -> Polled {
        let reading = Reading::enter();
        if self.wanted(reading.alone) {
            if let Some(done) = self.spin(decoder)? {
                return done;
            }
        }
        self.register()?;
        let Pipe::Registered(pipe) = &mut self.pipe else {
            return Err(lost());
        };
        let capacity = &mut self.capacity;
        std::future::poll_fn(|cx| {
            let polled = decoder.poll_frame(pipe, cx);
            fit(capacity, &*pipe, decoder, &polled);
            polled
        })
        .await
    }

    /// Whether this read should spin; counts a back-off down.
    fn wanted(&mut self, alone: bool) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        alone
    }

    /// Poll the pipe, out of the reactor, until a frame (or the end of the
    /// stream, or an error) is in or the budget is spent (`Ok(None)`).
    fn spin(&mut self, decoder: &mut Decoder) -> io::Result<Option<Polled>> {
        let mut raw = NonBlocking(self.bare()?);
        // `NonBlocking` never keeps a waker: the reactor is not involved.
        let mut cx = Context::from_waker(Waker::noop());
        let began = Instant::now();
        loop {
            let polled = decoder.poll_frame(&mut raw, &mut cx);
            fit(&mut self.capacity, &raw, decoder, &polled);
            if let Poll::Ready(done) = polled {
                self.misses = 0;
                return Ok(Some(done));
            }
            if began.elapsed() >= self.budget {
                self.misses = (self.misses + 1).min(MAX_BACKOFF);
                self.skip = (1 << self.misses) - 1;
                return Ok(None);
            }
            // SAFETY: sched_yield(2) takes no arguments and only lets other
            // runnable threads on this CPU (the bridge, often) go first.
            unsafe { libc::sched_yield() };
        }
    }

    /// The pipe's fd, taken out of the reactor if it was in.
    fn bare(&mut self) -> io::Result<RawFd> {
        if let Pipe::Registered(_) = self.pipe {
            let Pipe::Registered(pipe) = std::mem::replace(&mut self.pipe, Pipe::Lost) else {
                unreachable!("matched above")
            };
            self.pipe = Pipe::Bare(pipe.into_nonblocking_fd()?);
        }
        match &self.pipe {
            Pipe::Bare(fd) => Ok(fd.as_raw_fd()),
            _ => Err(lost()),
        }
    }

    /// Put the pipe back in the reactor if it was out. Registering reports
    /// bytes already waiting, so none are missed.
    fn register(&mut self) -> io::Result<()> {
        if let Pipe::Bare(_) = self.pipe {
            let Pipe::Bare(fd) = std::mem::replace(&mut self.pipe, Pipe::Lost) else {
                unreachable!("matched above")
            };
            self.pipe = Pipe::Registered(pipe::Receiver::from_owned_fd_unchecked(fd)?);
        }
        Ok(())
    }
}

/// Size the pipe for the frame coming in; back to the default once it is in.
fn fit(capacity: &mut Capacity, end: &impl AsRawFd, decoder: &Decoder, polled: &Poll<Polled>) {
    let size = match polled {
        Poll::Ready(Ok(Ok(Some(_)))) => Some(0),
        Poll::Pending => decoder.frame_size(),
        Poll::Ready(_) => None,
    };
    if let Some(size) = size {
        capacity.fit(end, size);
    }
}

fn lost() -> io::Error {
    io::Error::other("the worker's stdout was lost moving it in or out of the reactor")
}

/// Counts a read in [`READING`] while it lasts, dropped or not.
struct Reading {
    /// No other read was in progress when this one began.
    alone: bool,
}

impl Reading {
    fn enter() -> Self {
        Reading {
            alone: READING.fetch_add(1, Ordering::Relaxed) == 0,
        }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        READING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `read(2)` on a non-blocking fd: `Pending` (keeping no waker) when the
/// pipe is empty.
struct NonBlocking(RawFd);

impl AsRawFd for NonBlocking {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl AsyncRead for NonBlocking {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Not zeroed first: a large frame's part is read straight into its
        // (uninitialised) buffer.
        // SAFETY: only read(2) writes here, and only its count is marked
        // initialised below.
        let room = unsafe { buf.unfilled_mut() };
        loop {
            // SAFETY: read(2) into memory borrowed mutably, of its length,
            // from an fd the caller owns for the call.
            let n = unsafe { libc::read(self.0, room.as_mut_ptr().cast(), room.len()) };
            if let Ok(n) = usize::try_from(n) {
                // SAFETY: read(2) initialised the first `n` bytes of `room`.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Poll::Pending,
                _ => return Poll::Ready(Err(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn is_bare(r: &FrameReader) -> bool {
        matches!(r.pipe, Pipe::Bare(_))
    }

    /// One test, so that no other read in this binary shares [`READING`]
    /// with it: the spin is only taken by a read that is alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spins_out_of_the_reactor_and_parks_in_it() {
        let (tx, rx) = pipe::pipe().unwrap();
        let mut tx = std::fs::File::from(tx.into_blocking_fd().unwrap());
        let mut reader = FrameReader::new(rx);
        let mut decoder = Decoder::new(1 << 20);

        // No budget: always in the reactor.
        tx.write_all(&frame(b"one")).unwrap();
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"one"[..]));
        assert!(!is_bare(&reader));

        // A frame already there: caught by the spin, out of the reactor.
        reader.set_budget(Duration::from_millis(50));
        tx.write_all(&frame(b"two")).unwrap();
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"two"[..]));
        assert!(is_bare(&reader));

        // One written in two halves while the read spins.
        let writer = {
            let mut tx = tx.try_clone().unwrap();
            std::thread::spawn(move || {
                let f = frame(b"three");
                std::thread::sleep(Duration::from_millis(2));
                tx.write_all(&f[..3]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
                tx.write_all(&f[3..]).unwrap();
            })
        };
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"three"[..]));
        writer.join().unwrap();

        // Slower than the budget: the spin runs out, the read parks in the
        // reactor and still gets it; the next read parks without spinning.
        reader.set_budget(Duration::from_micros(200));
        let writer = {
            let mut tx = tx.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.write_all(&frame(b"four")).unwrap();
                tx.write_all(&frame(b"five")).unwrap();
            })
        };
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"four"[..]));
        assert!(!is_bare(&reader));
        assert_eq!((reader.misses, reader.skip), (1, 1));
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"five"[..]));
        assert!(!is_bare(&reader));
        writer.join().unwrap();

        // Back to spinning, and a catch resets the back-off.
        tx.write_all(&frame(b"six")).unwrap();
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"six"[..]));
        assert!(is_bare(&reader));
        assert_eq!((reader.misses, reader.skip), (0, 0));

        // Another read in progress: this one does not spin.
        let other = Reading::enter();
        tx.write_all(&frame(b"seven")).unwrap();
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"seven"[..]));
        assert!(!is_bare(&reader));
        drop(other);

        // The end of the stream is seen out of the reactor too.
        reader.set_budget(Duration::from_millis(50));
        tx.write_all(&frame(b"last")).unwrap();
        let got = reader.read_frame(&mut decoder).await.unwrap().unwrap();
        assert_eq!(got.map(|f| f.json).as_deref(), Some(&b"last"[..]));
        assert!(is_bare(&reader));
        drop(tx);
        assert_eq!(reader.read_frame(&mut decoder).await.unwrap(), Ok(None));
    }
}
