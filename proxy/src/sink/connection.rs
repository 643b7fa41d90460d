//! One follower connection as the sink uses it: statements pipelined in
//! order, the follower transaction opened lazily by the first statement and
//! committed with the origin's progress, and one way out of band.
//!
//! Every statement goes through here. A statement sent beside the pipeline
//! while a pipelined one has failed unseen would fail with "current
//! transaction is aborted" and hide the cause; so anything out of band (a
//! lazy prepare, a catalog read) first drains the pipeline ([`Self::settled`]),
//! and the first failure is always the one reported.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::noop_waker_ref;
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio_postgres::{Client, Statement};

use super::error::{ApplyContext, ApplyError, Operation};
use super::origin::{FORCE_XID_SQL, XACT_SETUP_SQL};
use super::pipeline::{Pipeline, StatementResult};
use super::value::WireValue;
use crate::progress::Progress;

/// Statements one follower connection may have unanswered.
const MAX_IN_FLIGHT: usize = 1024;
/// Parameter values those statements may carry in all: bounds the encoded
/// rows waiting in the connection's queue (a few MiB), whatever the
/// statement shapes (ARCHITECTURE.md, "Invariants": bounded memory).
const MAX_VALUES_IN_FLIGHT: usize = 32 * 1024;

/// The follower session of one sink (bound to the replication origin by
/// [`super::origin::setup_apply_session`]).
pub struct FollowerConnection {
    follower: String,
    client: Arc<Client>,
    pipeline: Pipeline<ApplyContext>,
    begin: Statement,
    commit: Statement,
    xact_setup: Statement,
    force_xid: Statement,
    /// Whether the open follower transaction's BEGIN went out.
    begun: bool,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for FollowerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowerConnection")
            .field("follower", &self.follower)
            .field("pipeline", &self.pipeline)
            .field("begun", &self.begun)
            .finish()
    }
}

impl FollowerConnection {
    /// Prepares the session's control statements.
    pub async fn open(
        follower: String,
        client: Arc<Client>,
        progress: Arc<Progress>,
    ) -> Result<Self, ApplyError> {
        let prepare = |sql: &'static str| {
            let client = client.clone();
            let follower = follower.clone();
            async move {
                client.prepare(sql).await.map_err(|source| {
                    let context = ApplyContext::control(Lsn::ZERO, Operation::PrepareSession);
                    ApplyError::statement(&follower, context, source)
                })
            }
        };
        Ok(Self {
            begin: prepare("BEGIN").await?,
            commit: prepare("COMMIT").await?,
            xact_setup: prepare(XACT_SETUP_SQL).await?,
            force_xid: prepare(FORCE_XID_SQL).await?,
            pipeline: Pipeline::new(MAX_IN_FLIGHT, MAX_VALUES_IN_FLIGHT),
            begun: false,
            follower,
            client,
            progress,
        })
    }

    /// Follower name.
    pub fn follower(&self) -> &str {
        &self.follower
    }

    /// Whether a follower transaction is open (its BEGIN went out).
    pub fn in_transaction(&self) -> bool {
        self.begun
    }

    /// The follower's durable progress, recorded at each commit.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    fn fail(&self, (source, context): (tokio_postgres::Error, ApplyContext)) -> ApplyError {
        ApplyError::statement(&self.follower, context, source)
    }

    /// Sends BEGIN before the transaction's first statement.
    async fn begin_if_needed(&mut self, commit_lsn: Lsn) -> Result<(), ApplyError> {
        if self.begun {
            return Ok(());
        }
        self.begun = true;
        let begin = self.begin.clone();
        self.control(begin, ApplyContext::control(commit_lsn, Operation::Begin))
            .await
    }

    async fn control(
        &mut self,
        statement: Statement,
        context: ApplyContext,
    ) -> Result<(), ApplyError> {
        let client = self.client.clone();
        let future = async move {
            client
                .execute_raw(&statement, std::iter::empty::<WireValue>())
                .await
        };
        self.pipeline
            .push(future, context)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Sends one prepared statement with its parameters, in order.
    pub async fn push(
        &mut self,
        statement: &Statement,
        params: Vec<WireValue>,
        context: ApplyContext,
    ) -> Result<(), ApplyError> {
        let client = self.client.clone();
        let statement = statement.clone();
        let weight = params.len().max(1);
        let future = async move { client.execute_raw(&statement, params).await };
        self.push_weighted(future, context, weight).await
    }

    /// The client for a statement future handed to [`Self::push_future`]
    /// (never to be used beside the pipeline: see [`Self::settled`]).
    pub fn pipelined_client(&self) -> Arc<Client> {
        self.client.clone()
    }

    /// Sends any statement future, in order (its first poll sends it).
    pub async fn push_future(
        &mut self,
        future: impl Future<Output = StatementResult> + Send + 'static,
        context: ApplyContext,
    ) -> Result<(), ApplyError> {
        self.push_weighted(future, context, 1).await
    }

    async fn push_weighted(
        &mut self,
        future: impl Future<Output = StatementResult> + Send + 'static,
        context: ApplyContext,
        weight: usize,
    ) -> Result<(), ApplyError> {
        self.begin_if_needed(context.commit_lsn).await?;
        self.pipeline
            .push_weighted(future, context, weight)
            .await
            .map_err(|e| self.fail(e))?;
        self.progress.worked();
        Ok(())
    }

    /// Queues one `COPY … FROM STDIN` of `data` (rows already encoded).
    ///
    /// The COPY runs as a task of its own: its rows can only follow the
    /// follower's acceptance (a round trip), and later statements wait behind
    /// it on the connection, so it must not wait for the pipeline's next look
    /// at its answers. Order is kept by the connection, which sends requests
    /// in the order they were made.
    pub async fn push_copy(
        &mut self,
        statement: Statement,
        data: Bytes,
        context: ApplyContext,
        weight: usize,
    ) -> Result<(), ApplyError> {
        self.begin_if_needed(context.commit_lsn).await?;
        let client = self.client.clone();
        let copy = async move {
            let sink = client.copy_in::<_, Bytes>(&statement).await?;
            futures_util::pin_mut!(sink);
            futures_util::SinkExt::send(&mut sink, data).await?;
            sink.finish().await
        };
        // The first poll queues the request on the connection, now, before
        // any later statement; the task then sends the rows once the
        // follower accepts the COPY.
        let mut copy: Pin<Box<dyn Future<Output = StatementResult> + Send>> = Box::pin(copy);
        let task = match copy
            .as_mut()
            .poll(&mut Context::from_waker(noop_waker_ref()))
        {
            Poll::Ready(result) => tokio::spawn(std::future::ready(result)),
            Poll::Pending => tokio::spawn(copy),
        };
        let future = async move {
            match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down.
                Err(_) => std::future::pending().await,
            }
        };
        self.push_weighted(future, context, weight).await
    }

    /// Waits for every statement in flight: the first failure among them is
    /// returned. Then the connection is free for one statement out of band.
    pub async fn settled(&mut self) -> Result<&Arc<Client>, ApplyError> {
        self.pipeline.drain().await.map_err(|e| self.fail(e))?;
        Ok(&self.client)
    }

    /// Prepares `sql` out of band (after [`Self::settled`]).
    pub async fn prepare(
        &mut self,
        sql: &str,
        context: ApplyContext,
    ) -> Result<Statement, ApplyError> {
        let client = self.settled().await?.clone();
        client
            .prepare(sql)
            .await
            .map_err(|source| ApplyError::statement(&self.follower, context, source))
    }

    /// Commits the open follower transaction (opening one if none is: a
    /// position alone is worth recording) with the origin's progress at
    /// `end`, inside it. `wrote`: the transaction changed rows, so it has an
    /// xid; otherwise one is forced, or the commit would carry no origin.
    pub async fn commit(
        &mut self,
        commit_lsn: Lsn,
        end: Lsn,
        commit_time: PgTimestamp,
        wrote: bool,
    ) -> Result<(), ApplyError> {
        self.begin_if_needed(commit_lsn).await?;
        if !wrote {
            let force_xid = self.force_xid.clone();
            self.control(
                force_xid,
                ApplyContext::control(commit_lsn, Operation::ForceXid),
            )
            .await?;
        }
        let client = self.client.clone();
        let statement = self.xact_setup.clone();
        let lsn = end.to_string();
        let micros = commit_time.0;
        self.pipeline
            .push(
                async move { client.execute(&statement, &[&lsn, &micros]).await },
                ApplyContext::control(commit_lsn, Operation::OriginProgress),
            )
            .await
            .map_err(|e| self.fail(e))?;
        let commit = self.commit.clone();
        self.control(commit, ApplyContext::control(commit_lsn, Operation::Commit))
            .await?;
        self.settled().await?;
        self.begun = false;
        self.progress.record(end, commit_time);
        Ok(())
    }

    /// Rolls the open follower transaction back and says whether that
    /// worked: a speculation given up must be gone before it is applied
    /// again. Statements in flight are dropped (their errors would come
    /// again).
    pub async fn rollback_checked(&mut self, commit_lsn: Lsn) -> Result<(), ApplyError> {
        self.pipeline.clear();
        if std::mem::take(&mut self.begun) {
            self.client.batch_execute("ROLLBACK").await.map_err(|e| {
                self.fail((e, ApplyContext::control(commit_lsn, Operation::Rollback)))
            })?;
        }
        Ok(())
    }

    /// Abandons the open follower transaction (shutdown, reconnect, failure):
    /// what is in flight is dropped and rolled back; a failure is ignored,
    /// the session is going away.
    pub async fn rollback(&mut self) {
        let _ = self.rollback_checked(Lsn::ZERO).await;
    }
}
