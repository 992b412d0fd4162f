//! A game's state as clients see it: entities, each a kind and a short list
//! of quantized integer fields. Games map their state onto this (positions
//! in fixed-point units, flags as small integers); the snapshot codec then
//! deltas it without knowing the game.

/// Most entities a state may hold.
pub const MAX_ENTITIES: usize = 1024;
/// Most fields an entity may have (the delta mask is one `u32`).
pub const MAX_FIELDS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    /// Unique within a state. Lower ids are sent first when a snapshot must
    /// be cut to fit one datagram: give the important entities low ids.
    pub id: u32,
    /// Game-defined.
    pub kind: u8,
    /// Game-defined, at most [`MAX_FIELDS`].
    pub fields: Vec<i32>,
}

/// Entities sorted by id, ids unique. Iteration order is the id order, so
/// encoding and hashing are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WorldState {
    entities: Vec<Entity>,
}

impl WorldState {
    pub fn new() -> WorldState {
        WorldState::default()
    }

    /// A state holding `entities` (in any order; a later duplicate id
    /// replaces an earlier one).
    pub fn from_entities(entities: impl IntoIterator<Item = Entity>) -> WorldState {
        let mut state = WorldState::new();
        for entity in entities {
            state.insert(entity);
        }
        state
    }

    /// The entity vector itself, for the codec, which rebuilds states in id
    /// order while reusing the field allocations. Callers keep the order.
    pub(crate) fn entities_vec_mut(&mut self) -> &mut Vec<Entity> {
        &mut self.entities
    }

    pub fn clear(&mut self) {
        self.entities.clear();
    }

    /// Adds an entity, replacing one with the same id; keeps the id order.
    /// Panics in debug builds beyond [`MAX_FIELDS`] fields (a game bug).
    pub fn insert(&mut self, entity: Entity) {
        debug_assert!(entity.fields.len() <= MAX_FIELDS);
        match self.entities.binary_search_by_key(&entity.id, |e| e.id) {
            Ok(i) => self.entities[i] = entity,
            Err(i) => self.entities.insert(i, entity),
        }
    }

    pub fn remove(&mut self, id: u32) -> Option<Entity> {
        let i = self.entities.binary_search_by_key(&id, |e| e.id).ok()?;
        Some(self.entities.remove(i))
    }

    pub fn get(&self, id: u32) -> Option<&Entity> {
        let i = self.entities.binary_search_by_key(&id, |e| e.id).ok()?;
        Some(&self.entities[i])
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Entity> {
        let i = self.entities.binary_search_by_key(&id, |e| e.id).ok()?;
        Some(&mut self.entities[i])
    }

    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }
}
