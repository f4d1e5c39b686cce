//! Group commit: steps of different machines that arrive together share one flush.
//!
//! Each step's writes stay one atomic sled batch; the writer applies every batch that is
//! waiting, flushes once, then answers them all. One fsync per round instead of one per
//! step is what lets thousands of machines make durable steps each second.

use tokio::sync::{mpsc, oneshot};

use super::Write;

type Reply = oneshot::Sender<Result<(), sled::Error>>;

#[derive(Clone)]
pub(super) struct Committer {
    sender: mpsc::UnboundedSender<(Vec<Write>, Reply)>,
}

impl Committer {
    pub(super) fn start(db: sled::Db, tree: sled::Tree) -> Committer {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(db, tree, receiver));
        Committer { sender }
    }

    /// Returns once the writes are applied and flushed. `Err(None)`-like failures (the
    /// writer is gone) surface as a sled error that says so.
    pub(super) async fn commit(&self, writes: Vec<Write>) -> Result<(), sled::Error> {
        let (reply, answer) = oneshot::channel();
        let stopped = || sled::Error::ReportableBug("the store writer has stopped".to_string());
        self.sender.send((writes, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(
    db: sled::Db,
    tree: sled::Tree,
    mut receiver: mpsc::UnboundedReceiver<(Vec<Write>, Reply)>,
) {
    while let Some(first) = receiver.recv().await {
        let mut round = vec![first];
        while let Ok(next) = receiver.try_recv() {
            round.push(next);
        }
        let mut replies = Vec::with_capacity(round.len());
        for (writes, reply) in round {
            replies.push((apply(&tree, writes), reply));
        }
        let flushed = db.flush_async().await.map(|_| ());
        for (applied, reply) in replies {
            let outcome = applied.and_then(|()| flushed.clone());
            let _ = reply.send(outcome);
        }
    }
}

fn apply(tree: &sled::Tree, writes: Vec<Write>) -> Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    for write in writes {
        match write {
            Write::Put { key, bytes } => batch.insert(key.as_bytes(), bytes),
            Write::Delete { key } => batch.remove(key.as_bytes()),
        }
    }
    tree.apply_batch(batch)
}
