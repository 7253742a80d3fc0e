//! The run's output, written on a thread of its own.
//!
//! The plugin emits from the thread that feeds its model. Encoding Parquet there (about a
//! tenth of a millisecond per row of 2048 floats) would take turns with the model: on a GPU,
//! that alone caps ResNet-50 far below what the device can do. Here the plugin's callbacks only
//! hand their batch, skipped row or progress report to the writing thread, in order, through a
//! channel holding at most [`QUEUED`] messages, so memory stays bounded. The first error stops
//! the writing; the next call reports it, and so does [`Writer::close`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use arrow::array::RecordBatch;

use crate::resume::Pieces;

/// Messages waiting for the writing thread: two batches, so that encoding one overlaps the
/// model producing the next, and no more.
const QUEUED: usize = 2;

enum Message {
    Write(RecordBatch),
    Skip(u64, String),
    RowsDone(u64),
}

pub struct Writer {
    sender: SyncSender<Message>,
    thread: JoinHandle<(Pieces, Result<()>)>,
    failed: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writing thread, which owns `pieces` until [`Writer::close`].
    pub fn start(mut pieces: Pieces) -> Result<Writer> {
        let (sender, receiver) = sync_channel::<Message>(QUEUED);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new().name("write".into()).spawn(move || {
            let mut status = Ok(());
            for message in receiver {
                let done = match message {
                    Message::Write(batch) => pieces.write(&batch),
                    Message::Skip(row, reason) => {
                        pieces.skip(row, &reason);
                        Ok(())
                    }
                    Message::RowsDone(rows) => pieces.rows_done(rows),
                };
                if let Err(e) = done {
                    flag.store(true, Ordering::SeqCst);
                    status = Err(e);
                    // Dropping the receiver makes every later send fail.
                    break;
                }
            }
            (pieces, status)
        })?;
        Ok(Writer { sender, thread, failed })
    }

    pub fn write(&self, batch: RecordBatch) -> Result<()> {
        self.send(Message::Write(batch))
    }

    pub fn skip(&self, row: u64, reason: &str) -> Result<()> {
        self.send(Message::Skip(row, reason.to_string()))
    }

    /// `rows` more input rows are emitted or skipped (a piece may be committed).
    pub fn rows_done(&self, rows: u64) -> Result<()> {
        self.send(Message::RowsDone(rows))
    }

    /// Whether the writing failed: the run should stop.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn send(&self, message: Message) -> Result<()> {
        self.sender
            .send(message)
            .map_err(|_| anyhow!("writing the output failed (the error follows when the run stops)"))
    }

    /// Waits for everything sent to be written; returns the pieces and how the writing went.
    pub fn close(self) -> (Option<Pieces>, Result<()>) {
        drop(self.sender);
        match self.thread.join() {
            Ok((pieces, status)) => (Some(pieces), status),
            Err(_) => (None, Err(anyhow!("the thread writing the output panicked"))),
        }
    }
}
