//! An input read on a thread of its own, a few batches ahead of the plugin.
//!
//! A plugin pulls its input through the boundary's stream from the thread that prepares its rows.
//! Read there, the Parquet decoding is serial work between two windows: on 16 cores the vision
//! plugin's decoders sat idle while one thread read the next window's JPEG bytes (one core reads
//! about 4,000 images/s of them, as fast as 16 cores decode them). Here the reading overlaps
//! everything else, and memory stays bounded: at most [`AHEAD`] batches wait in the channel,
//! and one more in the reading thread's hands.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchReader};

/// Batches read and not yet taken: enough to cover the reader's uneven pace (a new row group or
/// file costs more than a batch inside one), few enough to keep memory at a few batches.
const AHEAD: usize = 2;

pub struct ReadAhead {
    schema: SchemaRef,
    batches: Option<Receiver<Result<RecordBatch, ArrowError>>>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    pub fn new(inner: Box<dyn RecordBatchReader + Send>) -> std::io::Result<ReadAhead> {
        let schema = inner.schema();
        let (sender, receiver) = sync_channel(AHEAD);
        let thread = std::thread::Builder::new().name("read".into()).spawn(move || {
            for batch in inner {
                let failed = batch.is_err();
                // A closed channel: the plugin stopped reading (done early, or failed).
                if sender.send(batch).is_err() || failed {
                    break;
                }
            }
        })?;
        Ok(ReadAhead { schema, batches: Some(receiver), thread: Some(thread) })
    }
}

impl Iterator for ReadAhead {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.batches.as_ref()?.recv() {
            Ok(batch) => Some(batch),
            // The sender hung up: after the last batch or the first error, or because the reading
            // thread panicked, which must not pass for the end of the input.
            Err(_) => {
                self.batches = None;
                let panicked = self.thread.take().is_some_and(|t| t.join().is_err());
                panicked.then(|| Err(ArrowError::ExternalError("the thread reading the input panicked".into())))
            }
        }
    }
}

impl RecordBatchReader for ReadAhead {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Drop for ReadAhead {
    /// Closes the channel first, so a reader blocked on a full channel stops, then waits for it:
    /// no thread is left holding the input files once the run is over.
    fn drop(&mut self) {
        drop(self.batches.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// A reader of `n` one-row batches, then `tail`: an error, a panic or the end.
    struct Numbers {
        schema: SchemaRef,
        next: i64,
        n: i64,
        tail: Tail,
    }

    #[derive(Clone, Copy)]
    enum Tail {
        End,
        Error,
        Panic,
    }

    impl Iterator for Numbers {
        type Item = Result<RecordBatch, ArrowError>;
        fn next(&mut self) -> Option<Self::Item> {
            let i = self.next;
            self.next += 1;
            if i < self.n {
                let column = Arc::new(Int64Array::from(vec![i]));
                return Some(Ok(RecordBatch::try_new(self.schema.clone(), vec![column]).unwrap()));
            }
            match (i == self.n, self.tail) {
                (true, Tail::Error) => Some(Err(ArrowError::ParquetError("page 3 is corrupt".into()))),
                (true, Tail::Panic) => panic!("the reader panicked"),
                _ => None,
            }
        }
    }

    impl RecordBatchReader for Numbers {
        fn schema(&self) -> SchemaRef {
            self.schema.clone()
        }
    }

    fn read_ahead(n: i64, tail: Tail) -> ReadAhead {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        ReadAhead::new(Box::new(Numbers { schema, next: 0, n, tail })).unwrap()
    }

    fn values(reader: ReadAhead) -> Vec<Result<i64, String>> {
        reader
            .map(|b| {
                b.map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn batches_arrive_in_order_and_then_the_end() {
        assert_eq!(values(read_ahead(10, Tail::End)), (0..10).map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_is_passed_on_and_ends_the_stream() {
        let got = values(read_ahead(3, Tail::Error));
        assert_eq!(got.len(), 4);
        assert!(got[3].as_ref().is_err_and(|e| e.contains("page 3 is corrupt")), "{got:?}");
    }

    #[test]
    fn a_panic_in_the_reader_is_an_error_not_the_end_of_the_input() {
        let got = values(read_ahead(2, Tail::Panic));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[2].as_ref().is_err_and(|e| e.contains("panicked")), "{got:?}");
    }

    #[test]
    fn dropping_a_reader_that_is_ahead_does_not_hang() {
        let mut reader = read_ahead(1_000_000, Tail::End);
        assert!(reader.next().is_some());
        drop(reader);
    }
}
