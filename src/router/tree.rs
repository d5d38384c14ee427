//! A compressed radix tree over byte strings, the index under the router.
//!
//! Keys are inserted once, when a configuration is built; a lookup walks
//! one key and reports the deepest node whose whole key is a prefix of it,
//! so the cost of a lookup grows with the length of the key walked, never
//! with the number of keys stored (children are found by binary search
//! over at most 256 first bytes). Each node carries a value and an `up`
//! link to its nearest proper ancestor whose value the owner marked, so
//! every stored key that is a prefix of the walked one can be visited,
//! longest first, without allocating. This module knows bytes only: not
//! routes, hosts or paths.

/// A node id; the root is `0`.
pub(super) type NodeId = u32;

/// No node: the end of an `up` chain.
pub(super) const NONE: NodeId = NodeId::MAX;

/// A radix tree whose nodes each hold a `V`.
#[derive(Debug)]
pub(super) struct RadixTree<V> {
    nodes: Vec<Node<V>>,
}

#[derive(Debug)]
struct Node<V> {
    /// The bytes from the parent's key to this node's key.
    label: Box<[u8]>,
    /// (first byte of the child's label, child), sorted by byte.
    children: Vec<(u8, NodeId)>,
    /// Nearest proper ancestor marked by [`RadixTree::link_up`].
    up: NodeId,
    value: V,
}

/// Where a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Walk {
    /// The deepest node whose whole key is a prefix of the walked key.
    pub node: NodeId,
    /// The walked key is exactly that node's key.
    pub whole: bool,
}

impl<V: Default> RadixTree<V> {
    /// A tree holding only the root (the empty key).
    pub fn new() -> Self {
        RadixTree {
            nodes: vec![Node::new(Box::default())],
        }
    }

    /// The node for `key`, created (and an existing edge split) if needed.
    pub fn insert(&mut self, key: &[u8]) -> NodeId {
        let mut node: NodeId = 0;
        let mut rest = key;
        while let Some(&first) = rest.first() {
            let at = &self.nodes[node as usize].children;
            let child = match at.binary_search_by_key(&first, |&(b, _)| b) {
                Ok(i) => at[i].1,
                Err(i) => {
                    let leaf = self.push(rest.into());
                    self.nodes[node as usize].children.insert(i, (first, leaf));
                    return leaf;
                }
            };
            let label = &self.nodes[child as usize].label;
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common < label.len() {
                self.split(node, child, common);
            }
            // The child (or the new node that took its place) now ends
            // exactly `common` bytes in.
            let at = &self.nodes[node as usize].children;
            let i = at
                .binary_search_by_key(&first, |&(b, _)| b)
                .expect("the child just looked up or split stays under its first byte");
            node = at[i].1;
            rest = &rest[common..];
        }
        node
    }

    /// The value of `node`, to fill while building.
    pub fn value_mut(&mut self, node: NodeId) -> &mut V {
        &mut self.nodes[node as usize].value
    }
}

impl<V> RadixTree<V> {
    /// The value of `node`.
    pub fn value(&self, node: NodeId) -> &V {
        &self.nodes[node as usize].value
    }

    /// The nearest proper ancestor of `node` marked by the last
    /// [`RadixTree::link_up`], or [`NONE`].
    pub fn up(&self, node: NodeId) -> NodeId {
        self.nodes[node as usize].up
    }

    /// Sets every node's `up` link to its nearest proper ancestor whose
    /// value satisfies `marked`. Call once the tree is complete.
    pub fn link_up(&mut self, marked: impl Fn(&V) -> bool) {
        self.nodes[0].up = NONE;
        // Parents come before their children in a depth-first order.
        let mut stack: Vec<NodeId> = vec![0];
        while let Some(parent) = stack.pop() {
            let p = &self.nodes[parent as usize];
            let up = if marked(&p.value) { parent } else { p.up };
            for i in 0..p.children.len() {
                let child = self.nodes[parent as usize].children[i].1;
                self.nodes[child as usize].up = up;
                stack.push(child);
            }
        }
    }

    /// Walks `key` from the root as far as whole nodes match.
    pub fn walk(&self, key: &[u8]) -> Walk {
        let mut rest = key;
        let mut node: NodeId = 0;
        loop {
            let Some(&first) = rest.first() else {
                return Walk { node, whole: true };
            };
            let children = &self.nodes[node as usize].children;
            let Ok(i) = children.binary_search_by_key(&first, |&(b, _)| b) else {
                return Walk { node, whole: false };
            };
            let child = children[i].1;
            let label = &self.nodes[child as usize].label;
            // A key that ends inside the label or leaves it: the child's
            // key is not a prefix of it.
            let Some(after) = rest.strip_prefix(&**label) else {
                return Walk { node, whole: false };
            };
            rest = after;
            node = child;
        }
    }

    /// Number of nodes, root included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

impl<V: Default> RadixTree<V> {
    fn push(&mut self, label: Box<[u8]>) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).expect("fewer than 2^32 tree nodes");
        self.nodes.push(Node::new(label));
        id
    }

    /// Puts a new node between `parent` and `child`, holding the first
    /// `at` bytes of the child's label.
    fn split(&mut self, parent: NodeId, child: NodeId, at: usize) {
        let label = std::mem::take(&mut self.nodes[child as usize].label);
        let (head, tail) = label.split_at(at);
        let middle = self.push(head.into());
        self.nodes[child as usize].label = tail.into();
        self.nodes[middle as usize].children.push((tail[0], child));
        let slot = self.nodes[parent as usize]
            .children
            .iter_mut()
            .find(|(_, c)| *c == child)
            .expect("the child being split hangs under its parent");
        slot.1 = middle;
    }
}

impl<V: Default> Node<V> {
    fn new(label: Box<[u8]>) -> Self {
        Node {
            label,
            children: Vec::new(),
            up: NONE,
            value: V::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree whose values are the keys they were inserted under.
    fn tree(keys: &[&str]) -> RadixTree<Option<String>> {
        let mut t = RadixTree::new();
        for k in keys {
            let n = t.insert(k.as_bytes());
            *t.value_mut(n) = Some(k.to_string());
        }
        t.link_up(Option::is_some);
        t
    }

    /// Every stored key that is a prefix of `key`, longest first.
    fn prefixes(t: &RadixTree<Option<String>>, key: &str) -> Vec<String> {
        let walk = t.walk(key.as_bytes());
        let mut node = if t.value(walk.node).is_some() {
            walk.node
        } else {
            t.up(walk.node)
        };
        let mut out = Vec::new();
        while node != NONE {
            out.extend(t.value(node).clone());
            node = t.up(node);
        }
        out
    }

    #[test]
    fn walk_finds_every_stored_prefix_longest_first() {
        let t = tree(&["/api/", "/api/v2/", "/a", "/apx", "/", "/api/v2/x"]);
        assert_eq!(
            prefixes(&t, "/api/v2/users"),
            ["/api/v2/", "/api/", "/a", "/"]
        );
        assert_eq!(prefixes(&t, "/api/v"), ["/api/", "/a", "/"]);
        assert_eq!(prefixes(&t, "/ap"), ["/a", "/"]);
        assert_eq!(prefixes(&t, "/b"), ["/"]);
        assert_eq!(prefixes(&t, ""), Vec::<String>::new());
    }

    #[test]
    fn walk_says_whether_the_key_ends_on_the_node() {
        let t = tree(&["/api/", "/api/v2/"]);
        let at = |k: &str| {
            let w = t.walk(k.as_bytes());
            (t.value(w.node).clone(), w.whole)
        };
        assert_eq!(at("/api/"), (Some("/api/".into()), true));
        assert_eq!(at("/api/x"), (Some("/api/".into()), false));
        // "/api/v" ends inside the edge to "/api/v2/".
        assert_eq!(at("/api/v"), (Some("/api/".into()), false));
        assert_eq!(at("/ap"), (None, false));
    }

    #[test]
    fn inserting_again_returns_the_same_node_and_splits_share_prefixes() {
        let mut t: RadixTree<()> = RadixTree::new();
        let a = t.insert(b"/tenant1/");
        let b = t.insert(b"/tenant2/");
        assert_eq!(t.insert(b"/tenant1/"), a);
        assert_ne!(a, b);
        // root, "/tenant", "1/", "2/".
        assert_eq!(t.len(), 4);
    }
}
