//! Tunnel stacks, interned: a packet and an observation carry a 4-byte [`TunnelId`] instead of
//! the few hundred bytes of their [`Tunnels`], and the outputs turn the id back into layers.
//!
//! A network has few distinct stacks (one per ERSPAN session, VNI, GRE key...), so the table is
//! small; each reader keeps a [`LocalCache`] in front of it so that the shared table is locked
//! only for a stack the reader has not seen yet. Both are bounded: past [`MAX_STACKS`] distinct
//! stacks a packet gets [`TunnelId::UNKNOWN`] (its layers are still counted by the reader).

use std::sync::RwLock;

use rustc_hash::FxHashMap;
use serde_json::{Value, json};

use super::{TunnelKind, TunnelLayer, Tunnels};

/// Distinct stacks kept over the whole process.
pub const MAX_STACKS: usize = 65_536;
/// Stacks a reader's cache holds before it starts over.
const LOCAL_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TunnelId(u32);

impl TunnelId {
    /// Not tunnelled.
    pub const NONE: TunnelId = TunnelId(0);
    /// Tunnelled, but the table was full: the layers are not known.
    pub const UNKNOWN: TunnelId = TunnelId(u32::MAX);

    pub fn is_none(self) -> bool {
        self == TunnelId::NONE
    }
}

#[derive(Default)]
struct Table {
    by_stack: FxHashMap<Tunnels, u32>,
    stacks: Vec<Tunnels>,
}

static TABLE: RwLock<Option<Table>> = RwLock::new(None);

/// The id of `t`, adding it to the shared table if needed.
pub fn intern(t: &Tunnels) -> TunnelId {
    if t.is_empty() {
        return TunnelId::NONE;
    }
    if let Some(id) = TABLE.read().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|tb| tb.by_stack.get(t)) {
        return TunnelId(*id);
    }
    let mut guard = TABLE.write().unwrap_or_else(|e| e.into_inner());
    let tb = guard.get_or_insert_with(Table::default);
    if let Some(id) = tb.by_stack.get(t) {
        return TunnelId(*id);
    }
    if tb.stacks.len() >= MAX_STACKS {
        return TunnelId::UNKNOWN;
    }
    tb.stacks.push(*t);
    let id = tb.stacks.len() as u32;
    tb.by_stack.insert(*t, id);
    TunnelId(id)
}

/// The layers of an id (empty for [`TunnelId::NONE`] and [`TunnelId::UNKNOWN`]).
pub fn layers(id: TunnelId) -> Tunnels {
    if id.is_none() || id == TunnelId::UNKNOWN {
        return Tunnels::default();
    }
    let guard = TABLE.read().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().and_then(|tb| tb.stacks.get(id.0 as usize - 1)).copied().unwrap_or_default()
}

/// One reader's cache in front of the shared table.
#[derive(Default)]
pub struct LocalCache {
    last: Option<(Tunnels, TunnelId)>,
    map: FxHashMap<Tunnels, TunnelId>,
}

impl LocalCache {
    #[inline(always)]
    pub fn id(&mut self, t: &Tunnels) -> TunnelId {
        if t.is_empty() { TunnelId::NONE } else { self.lookup(t) }
    }

    #[inline(never)]
    fn lookup(&mut self, t: &Tunnels) -> TunnelId {
        // Consecutive packets mostly come through the same tunnel.
        if let Some((last, id)) = &self.last
            && last == t
        {
            return *id;
        }
        let id = match self.map.get(t) {
            Some(id) => *id,
            None => {
                if self.map.len() >= LOCAL_MAX {
                    self.map.clear();
                }
                let id = intern(t);
                self.map.insert(*t, id);
                id
            }
        };
        self.last = Some((*t, id));
        id
    }
}

/// One layer as the events and reports show it: `{"type":"vxlan","vni":42}`.
pub fn layer_json(l: &TunnelLayer) -> Value {
    let mut v = json!({ "type": l.kind.as_str() });
    let id_name = match l.kind {
        TunnelKind::Gre => "key",
        TunnelKind::Erspan => "session",
        TunnelKind::Vxlan | TunnelKind::Geneve => "vni",
        TunnelKind::Pppoe => "session",
        TunnelKind::Pbb => "isid",
        TunnelKind::Nsh => "spi",
        TunnelKind::Vntag => "vif",
        TunnelKind::Etag => "ecid",
        TunnelKind::Ipip | TunnelKind::Teredo | TunnelKind::Mpls => "id",
    };
    if let Some(id) = l.id() {
        v[id_name] = id.into();
    }
    if let Some(vlan) = l.vlan() {
        v["vlan"] = vlan.into();
    }
    if l.kind == TunnelKind::Mpls {
        v["labels"] = l.labels().into();
    }
    v
}

/// The layers of an id, outer first, as JSON; `None` when not tunnelled.
pub fn to_json(id: TunnelId) -> Option<Value> {
    if id.is_none() {
        return None;
    }
    if id == TunnelId::UNKNOWN {
        return Some(json!([{ "type": "unknown" }]));
    }
    Some(Value::Array(layers(id).as_slice().iter().map(layer_json).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_stack_same_id_and_back() {
        let mut t = Tunnels::default();
        t.push(TunnelLayer::new(TunnelKind::Erspan, Some(5)));
        t.push(TunnelLayer::new(TunnelKind::Vxlan, Some(42)));
        let mut cache = LocalCache::default();
        let id = cache.id(&t);
        assert_eq!(cache.id(&t), id);
        assert_eq!(intern(&t), id);
        assert_eq!(layers(id), t);
        assert_eq!(to_json(id).unwrap(), json!([{"type": "erspan", "session": 5}, {"type": "vxlan", "vni": 42}]));
        assert_eq!(cache.id(&Tunnels::default()), TunnelId::NONE);
        assert_eq!(to_json(TunnelId::NONE), None);
    }
}
