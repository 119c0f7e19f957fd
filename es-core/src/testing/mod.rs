//! Test support: the store conformance suite and the given/when/then
//! harness for aggregates ([`given`]).
//!
//! Every [`EventStore`](crate::EventStore) must pass
//! [`conformance_suite!`](crate::conformance_suite), which expands to one
//! `#[test]` per rule of the store contract and of a
//! [`Repository`](crate::Repository) running commands on the store, in a
//! module named `conformance`:
//!
//! ```
//! // In a test file of a store implementation:
//! es_core::conformance_suite!(|| async { es_core::MemoryStore::new() });
//! # fn main() {}
//! ```
//!
//! The factory is called once per test and must return a fresh, empty store.
//! Each test runs on its own multi-threaded Tokio runtime and fails after
//! [`CASE_TIMEOUT`] rather than hang.

use std::future::Future;
use std::time::Duration;

pub mod conformance;
pub mod given;
pub mod hooked;

/// How long one conformance case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one test case on a fresh multi-threaded runtime, with a timeout.
///
/// # Panics
///
/// When the runtime cannot be built, the case panics, or it times out.
pub fn run_case<F: Future<Output = ()>>(case: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a Tokio runtime for the test");
    runtime.block_on(async {
        tokio::time::timeout(CASE_TIMEOUT, case)
            .await
            .expect("the test case timed out");
    });
}

/// Expands to the whole store conformance suite, one `#[test]` per rule, in
/// a module `conformance`. The argument is a closure (or function) returning
/// a future of a fresh store; the store type must be
/// `EventStore + SnapshotStore + Clone + 'static`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::__conformance_cases! {
            ($factory)
            expected_any_appends_to_new_stream,
            expected_any_appends_to_existing_stream,
            expected_no_stream_passes_on_absent_stream,
            expected_no_stream_fails_on_existing_stream,
            expected_stream_exists_passes_on_existing_stream,
            expected_stream_exists_fails_on_absent_stream,
            expected_exact_passes_on_matching_version,
            expected_exact_fails_when_stream_is_ahead,
            expected_exact_fails_when_stream_is_behind,
            expected_exact_zero_passes_on_absent_stream,
            expected_exact_zero_fails_on_existing_stream,
            failed_check_writes_nothing,
            batch_versions_are_contiguous,
            batch_is_atomic_when_one_event_is_invalid,
            concurrent_any_appends_all_land,
            concurrent_exact_appends_have_one_winner,
            idempotent_retry_with_any,
            idempotent_retry_with_no_stream,
            idempotent_retry_with_stream_exists,
            idempotent_retry_with_exact_after_later_appends,
            idempotent_partial_overlap_is_conflict,
            idempotent_ids_in_other_stream_are_conflict,
            idempotent_ids_in_other_order_are_conflict,
            duplicate_id_within_batch_is_conflict,
            empty_batch_passes_version_check_and_writes_nothing,
            empty_batch_fails_version_check,
            invalid_stream_id_empty_is_rejected,
            invalid_stream_id_over_255_bytes_is_rejected,
            invalid_stream_id_control_characters_are_rejected,
            oversize_event_is_rejected_and_nothing_written,
            oversize_batch_is_rejected_and_nothing_written,
            invalid_event_type_or_schema_version_is_rejected,
            nul_in_data_or_metadata_is_rejected,
            json_nesting_at_the_limit_reads_back_and_deeper_is_rejected,
            extreme_floats_read_back_equal,
            negative_zero_is_rejected,
            integers_at_the_edges_read_back_equal,
            long_strings_with_every_escape_read_back_equal,
            schema_versions_at_the_edges,
            snapshots_at_the_edges,
            exact_and_reads_at_the_edges,
            arbitrary_json_reads_back_equal_or_is_rejected_alike,
            read_stream_forward,
            read_stream_backward,
            read_stream_from_version,
            read_stream_with_limit,
            read_absent_stream_is_empty,
            recorded_envelope_round_trips,
            hostile_text_round_trips,
            feed_holds_every_event_once_in_stream_order,
            feed_order_is_stable_across_reads,
            feed_positions_match_append_results,
            feed_filters_by_category,
            feed_filters_by_event_type,
            feed_resumes_from_checkpoint,
            read_feed_pages_reach_every_match,
            subscription_catches_up_then_goes_live,
            subscription_from_checkpoint_yields_only_the_rest,
            subscription_with_filter,
            subscription_to_rare_events,
            subscription_has_no_gap_or_duplicate_at_switch,
            snapshots_keep_the_newest_per_stream,
            // Appends across streams; archived and deleted streams.
            append_many_writes_every_stream_or_none,
            append_many_events_are_contiguous_in_request_order,
            append_many_sent_again_is_a_replay,
            append_many_partly_stored_is_a_conflict,
            append_many_refuses_repeats_and_oversize_requests,
            append_many_checks_streams_without_events,
            append_many_overlapping_requests_never_deadlock,
            archived_stream_reads_say_archived,
            append_to_archived_stream_restores_it,
            deleted_stream_refuses_appends_under_every_expected_version,
            deleted_stream_reads_say_deleted,
            system_event_types_are_refused,
            // Repository conformance: the command path on the store.
            repository_command_appends_and_load_folds_the_stream,
            repository_refused_command_writes_nothing,
            repository_cached_state_reads_nothing,
            repository_two_repositories_see_each_others_writes,
            repository_stale_cache_retries_after_the_conflict,
            repository_stale_cache_does_not_refuse_wrongly,
            repository_on_lagging_reads_does_not_refuse_wrongly,
            repository_on_lagging_reads_retries_on_the_newest_version,
            repository_conflicts_are_retried_a_bounded_number_of_times,
            repository_new_events_carry_correlation_and_causation,
            repository_snapshots_every_n_events_and_loads_read_only_the_tail,
            repository_snapshot_of_another_version_is_ignored,
            repository_snapshot_that_does_not_decode_is_ignored_with_a_warning,
            repository_unknown_event_types_fail_the_load_unless_skipped,
            repository_on_archived_and_deleted_streams,
            repository_command_on_two_aggregates_writes_both_or_neither,
            // Commands sent again: idempotent by command id.
            repository_command_sent_again_takes_effect_once,
            repository_same_command_from_8_tasks_takes_effect_once,
            repository_refused_or_unkeyed_commands_are_decided_again,
            repository_redelivered_event_reaction_takes_effect_once,
            repository_command_whose_reply_was_lost_takes_effect_once,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (($factory:expr) $($case:ident,)*) => {
        #[allow(clippy::redundant_closure_call)]
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    $crate::testing::run_case(async {
                        let store = ($factory)().await;
                        $crate::testing::conformance::$case(store).await;
                    });
                }
            )*
        }
    };
}
