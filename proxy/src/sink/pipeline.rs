//! Ordered statement pipelining on one tokio-postgres connection.
//!
//! tokio-postgres sends a request when its future is first polled and
//! answers requests in order, so many statements can be in flight at once.
//! [`Pipeline`] polls each future once as soon as it is queued (fixing the
//! send order to the queue order), keeps a bounded number in flight — by
//! statements and by weight (parameter values), so a run of 256-row inserts
//! cannot park hundreds of megabytes of encoded rows in the connection's
//! queue — and reports the first failure together with what the statement
//! was doing.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::task::noop_waker_ref;

/// A statement's result.
pub type StatementResult = Result<u64, tokio_postgres::Error>;

type Pending = Pin<Box<dyn Future<Output = StatementResult> + Send>>;

enum Slot<C> {
    Waiting(Pending, C, usize),
    Done(StatementResult, C, usize),
}

/// In-flight statements, oldest first, each with a context `C` for errors.
pub struct Pipeline<C> {
    queue: VecDeque<Slot<C>>,
    max_in_flight: usize,
    max_weight: usize,
    weight: usize,
}

impl<C> std::fmt::Debug for Pipeline<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("in_flight", &self.queue.len())
            .finish()
    }
}

impl<C> Pipeline<C> {
    /// A pipeline holding at most `max_in_flight` unanswered statements of
    /// at most `max_weight` total weight (one statement may exceed it alone).
    pub fn new(max_in_flight: usize, max_weight: usize) -> Self {
        Self {
            queue: VecDeque::with_capacity(max_in_flight.min(1024)),
            max_in_flight: max_in_flight.max(1),
            max_weight: max_weight.max(1),
            weight: 0,
        }
    }

    /// Statements not yet answered.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a statement of weight 1 ([`Pipeline::push_weighted`]).
    pub async fn push(
        &mut self,
        future: impl Future<Output = StatementResult> + Send + 'static,
        context: C,
    ) -> Result<(), (tokio_postgres::Error, C)> {
        self.push_weighted(future, context, 1).await
    }

    /// Queues a statement and sends it now; waits for the oldest answers while
    /// the pipeline is over its statement or weight bound. Returns the first
    /// failure seen, with its context.
    pub async fn push_weighted(
        &mut self,
        future: impl Future<Output = StatementResult> + Send + 'static,
        context: C,
        weight: usize,
    ) -> Result<(), (tokio_postgres::Error, C)> {
        let mut future: Pending = Box::pin(future);
        // The first poll sends the request; a later real poll re-registers
        // the proper waker.
        let first = {
            let mut cx = Context::from_waker(noop_waker_ref());
            future.poll_unpin(&mut cx)
        };
        let slot = match first {
            Poll::Ready(result) => Slot::Done(result, context, weight),
            Poll::Pending => Slot::Waiting(future, context, weight),
        };
        self.queue.push_back(slot);
        self.weight += weight;
        while self.queue.len() > self.max_in_flight
            || (self.weight > self.max_weight && self.queue.len() > 1)
        {
            self.pop().await?;
        }
        Ok(())
    }

    /// Waits for every statement; the first failure wins.
    pub async fn drain(&mut self) -> Result<(), (tokio_postgres::Error, C)> {
        let mut first_error = None;
        while !self.queue.is_empty() {
            if let Err(e) = self.pop().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Forgets everything in flight (after the connection was lost).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.weight = 0;
    }

    async fn pop(&mut self) -> Result<(), (tokio_postgres::Error, C)> {
        let Some(slot) = self.queue.pop_front() else {
            return Ok(());
        };
        let (result, context, weight) = match slot {
            Slot::Done(result, context, weight) => (result, context, weight),
            Slot::Waiting(future, context, weight) => (future.await, context, weight),
        };
        self.weight -= weight;
        result.map(|_| ()).map_err(|e| (e, context))
    }
}
