//! Commands across retries: [`CommandContext`], the metadata and the id a
//! command carries, and the event ids derived from that id.
//!
//! A command id names one command, however many times it is sent. The
//! events a command decides get ids derived from it
//! ([`command_event_id`]), so that a command sent again after a timeout, a
//! lost reply or a crash writes the same event ids, which the store
//! recognizes; [`Repository::execute`](crate::Repository::execute) then
//! returns the first outcome instead of applying the command twice.

use uuid::Uuid;

use crate::{Metadata, RecordedEvent, StreamId};

/// The namespace of the event ids derived from command ids (a version 5,
/// name-based UUID namespace).
pub const COMMAND_EVENT_NAMESPACE: Uuid =
    Uuid::from_u128(0x59c0_a4a2_8f34_438c_b7b0_faad_14c8_bbf1);

/// The namespace of the command ids derived from an event and a reaction.
pub const REACTION_COMMAND_NAMESPACE: Uuid =
    Uuid::from_u128(0xf1d5_4f29_b727_45e1_953a_8b8a_e907_3f27);

/// The id of the event at `index` (from 0) of the events that command
/// `command_id` appends to `stream`: the version 5 (SHA-1, name-based)
/// UUID in [`COMMAND_EVENT_NAMESPACE`] of the name made of the command
/// id's 16 bytes, the stream id's UTF-8 bytes and `index` as 4 big-endian
/// bytes.
///
/// The same command, stream and index always give the same id, on every
/// machine and in every release: the derivation is part of the stored
/// format. The stream is part of the name, so that one command id used on
/// two streams (a command that writes to two aggregates) gives two sets of
/// ids.
///
/// ```
/// use es_core::{StreamId, command_event_id};
/// use uuid::Uuid;
///
/// let command = Uuid::from_u128(1);
/// let stream = StreamId::new("Order-42")?;
/// assert_eq!(command_event_id(command, &stream, 0), command_event_id(command, &stream, 0));
/// assert_ne!(command_event_id(command, &stream, 0), command_event_id(command, &stream, 1));
/// # Ok::<(), es_core::StreamIdError>(())
/// ```
#[must_use]
pub fn command_event_id(command_id: Uuid, stream: &StreamId, index: u32) -> Uuid {
    let stream = stream.as_str().as_bytes();
    let mut name = Vec::with_capacity(16 + stream.len() + 4);
    name.extend_from_slice(command_id.as_bytes());
    name.extend_from_slice(stream);
    name.extend_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&COMMAND_EVENT_NAMESPACE, &name)
}

/// The id of the command that the reaction named `reaction` issues in
/// response to the event `event_id`: the version 5 UUID in
/// [`REACTION_COMMAND_NAMESPACE`] of the event id's 16 bytes followed by
/// the reaction's name in UTF-8. A redelivered event gives its reaction
/// the same command id, so the command takes effect once.
#[must_use]
pub fn reaction_command_id(event_id: Uuid, reaction: &str) -> Uuid {
    let mut name = Vec::with_capacity(16 + reaction.len());
    name.extend_from_slice(event_id.as_bytes());
    name.extend_from_slice(reaction.as_bytes());
    Uuid::new_v5(&REACTION_COMMAND_NAMESPACE, &name)
}

/// What a command carries besides itself: the metadata it writes into every
/// event it causes (the correlation id of the flow, and as causation id the
/// id of the command or of the event that triggered it), and its command
/// id, which identifies it across retries.
///
/// **One command id, one command.** A context with a command id
/// ([`for_command`](Self::for_command), [`caused_by`](Self::caused_by),
/// [`with_command_id`](Self::with_command_id)) makes the command
/// idempotent: sent again to the same stream, it is recognized as applied
/// and returns its first outcome. So such a context must not be reused for
/// another command on that stream; a context for a whole flow of commands
/// is [`new`](Self::new) with a correlation id. A context without a command
/// id gives every event a fresh random id, and each execution is a new
/// command.
///
/// ```
/// use es_core::CommandContext;
/// use uuid::Uuid;
///
/// // The id a client sends with its request, the same on every retry.
/// let command_id = Uuid::now_v7();
/// let context = CommandContext::for_command(command_id).with_correlation_id("req-42");
/// assert_eq!(context.command_id(), Some(command_id));
/// assert_eq!(context.metadata().causation_id, Some(command_id));
///
/// // A flow of several commands: no command id, one correlation id.
/// let flow = CommandContext::new().with_correlation_id("checkout-1001");
/// assert_eq!(flow.command_id(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandContext {
    command_id: Option<Uuid>,
    metadata: Metadata,
}

impl CommandContext {
    /// No command id and no metadata: each execution is a new command.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The command `command_id`: the key that recognizes it across retries,
    /// the causation id, and the correlation id until one is set.
    #[must_use]
    pub fn for_command(command_id: Uuid) -> Self {
        Self {
            command_id: Some(command_id),
            metadata: Metadata::default()
                .with_causation_id(command_id)
                .with_correlation_id(command_id.to_string()),
        }
    }

    /// The command that the reaction (a process manager, a policy) named
    /// `reaction` issues in response to `event`: its command id is derived
    /// from the event's id and the name ([`reaction_command_id`]), so a
    /// redelivered event cannot apply it twice; the causation id is the
    /// event's id, and the correlation id and actor carry over from it (the
    /// correlation id is the event's id when it had none).
    ///
    /// A reaction that issues several commands to one stream for one event
    /// gives each its own name.
    #[must_use]
    pub fn caused_by(event: &RecordedEvent, reaction: &str) -> Self {
        let correlation = event
            .metadata
            .correlation_id
            .clone()
            .unwrap_or_else(|| event.event_id.to_string());
        let mut metadata = Metadata::default()
            .with_causation_id(event.event_id)
            .with_correlation_id(correlation);
        metadata.actor.clone_from(&event.metadata.actor);
        Self {
            command_id: Some(reaction_command_id(event.event_id, reaction)),
            metadata,
        }
    }

    /// A context with `metadata` and no command id.
    #[must_use]
    pub fn from_metadata(metadata: Metadata) -> Self {
        Self {
            command_id: None,
            metadata,
        }
    }

    /// Sets the command id (the metadata is unchanged).
    #[must_use]
    pub fn with_command_id(mut self, command_id: Uuid) -> Self {
        self.command_id = Some(command_id);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata = self.metadata.with_correlation_id(id);
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.metadata = self.metadata.with_actor(actor);
        self
    }

    /// Adds an application-defined field.
    #[must_use]
    pub fn with_custom(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.metadata = self.metadata.with_custom(key, value);
        self
    }

    /// The command id, if the command has one.
    #[must_use]
    pub fn command_id(&self) -> Option<Uuid> {
        self.command_id
    }

    /// The metadata every new event gets.
    #[must_use]
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derivation is part of the stored format: these values (computed
    /// apart from this code, from the documented recipe) must never change.
    #[test]
    fn derived_ids_are_stable() {
        let stream = StreamId::new("Order-42").expect("valid");
        let command = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(
            command_event_id(command, &stream, 0).to_string(),
            "d138e482-4dd9-5979-a983-23447431182b"
        );
        assert_eq!(
            command_event_id(command, &stream, 1).to_string(),
            "05232d6a-ec56-5869-b2e7-621a0611ce42"
        );
        assert_eq!(
            reaction_command_id(command, "reserve_stock").to_string(),
            "f8512e9e-6d18-507f-ac74-01fbb84c44e8"
        );
    }

    #[test]
    fn derived_ids_differ_by_command_stream_index_and_reaction() {
        let a = StreamId::new("Order-1").expect("valid");
        let b = StreamId::new("Order-2").expect("valid");
        let (one, two) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ids = [
            command_event_id(one, &a, 0),
            command_event_id(one, &a, 1),
            command_event_id(one, &b, 0),
            command_event_id(two, &a, 0),
            reaction_command_id(one, "x"),
            reaction_command_id(one, "y"),
            reaction_command_id(two, "x"),
        ];
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(ids.iter().all(|id| id.get_version_num() == 5));
    }

    #[test]
    fn contexts_carry_a_command_id_only_when_given_one() {
        let command = Uuid::from_u128(7);
        assert_eq!(
            CommandContext::for_command(command).command_id(),
            Some(command)
        );
        assert_eq!(CommandContext::new().command_id(), None);
        let kept = CommandContext::from_metadata(Metadata::default()).with_command_id(command);
        assert_eq!(kept.command_id(), Some(command));
    }
}
