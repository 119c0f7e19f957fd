//! Pages of the feed read ahead by a task of their own while the runner
//! applies earlier ones.

use es_core::{EventStore as _, FeedFilter, FeedPage, Position, StoreError};

use crate::PgEventStore;

/// Pages of the feed read ahead by a task of their own, while the runner
/// applies earlier ones: each read fetches several batches, and at most
/// about two reads' worth of events wait in memory. The task stops after
/// the first page that caught up (or an error), and when dropped.
pub(super) struct ReadAhead {
    pub(super) pages: tokio::sync::mpsc::Receiver<Result<FeedPage, StoreError>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    /// Batches read ahead and not yet applied, at most.
    const DEPTH: usize = 8;
    /// Batches read by one query: fewer, larger reads cost less per event.
    const BATCHES_PER_READ: usize = 8;

    pub(super) fn start(
        store: PgEventStore,
        filter: FeedFilter,
        after: Position,
        batch: usize,
    ) -> Self {
        let (sender, pages) = tokio::sync::mpsc::channel(Self::DEPTH);
        let task = tokio::spawn(async move {
            let mut after = after;
            loop {
                let read = store
                    .read_feed(after, &filter, batch.saturating_mul(Self::BATCHES_PER_READ))
                    .await;
                let next = match &read {
                    Ok(page) if page.more => Some(page.next),
                    _ => None,
                };
                let batches = match read {
                    Ok(page) => Self::split(page, batch).into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error)],
                };
                for read in batches {
                    if sender.send(read).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(position) => after = position,
                    None => return,
                }
            }
        });
        Self { pages, task }
    }

    /// `page` as pages of at most `batch` events; all but the last end at
    /// their last event and have more after them.
    fn split(page: FeedPage, batch: usize) -> Vec<FeedPage> {
        if page.events.len() <= batch {
            return vec![page];
        }
        let (next, more) = (page.next, page.more);
        let mut events = page.events;
        let mut batches = Vec::with_capacity(events.len().div_ceil(batch));
        while events.len() > batch {
            let rest = events.split_off(batch);
            let end = events.last().map_or(next, |e| e.position);
            batches.push(FeedPage::new(events, end, true));
            events = rest;
        }
        batches.push(FeedPage::new(events, next, more));
        batches
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use es_core::{FeedPage, Metadata, Position, StreamId};

    use super::ReadAhead;

    fn page(sequences: std::ops::Range<u64>, next: u64, more: bool) -> FeedPage {
        let events = sequences
            .map(|seq| {
                es_core::backend::recorded_event(
                    uuid::Uuid::new_v4(),
                    StreamId::new("Split-1").expect("a valid id"),
                    seq,
                    Position::from_parts(7, seq),
                    "Happened".to_owned(),
                    1,
                    serde_json::Value::Null,
                    Metadata::default(),
                    chrono::Utc::now(),
                )
            })
            .collect();
        FeedPage::new(events, Position::from_parts(7, next), more)
    }

    fn shape(pages: &[FeedPage]) -> Vec<(usize, u64, bool)> {
        pages
            .iter()
            .map(|p| (p.events.len(), p.next.sequence(), p.more))
            .collect()
    }

    #[test]
    fn a_read_splits_into_batches_that_each_end_at_their_last_event() {
        let pages = ReadAhead::split(page(1..11, 20, false), 4);
        assert_eq!(shape(&pages), [(4, 4, true), (4, 8, true), (2, 20, false)]);
        let all: Vec<u64> = pages
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.position.sequence()))
            .collect();
        assert_eq!(all, (1..11).collect::<Vec<_>>());
        assert_eq!(
            shape(&ReadAhead::split(page(1..9, 8, true), 4)),
            [(4, 4, true), (4, 8, true)]
        );
        assert_eq!(
            shape(&ReadAhead::split(page(1..1, 30, true), 4)),
            [(0, 30, true)]
        );
    }
}
