//! Merkle trees as Certificate Transparency hashes them (RFC 9162 §2.1): leaves hashed
//! with a `0x00` prefix, interior nodes with `0x01`, the tree over `n` leaves split at the
//! largest power of two below `n`; inclusion proofs are the audit paths of §2.1.3.
//!
//! A checkpoint's leaves are the aggregates' heads, in `(aggregate_type, aggregate_id)`
//! order: [`head_leaf`].

use sha2::{Digest, Sha256};

use super::chain::Hash;

/// The leaf of one aggregate's head: `aggregate_type` and `aggregate_id` (each an 8-byte
/// big-endian length and UTF-8 bytes), the head's sequence (8-byte big-endian) and its
/// chain hash.
pub fn head_leaf(aggregate_type: &str, aggregate_id: &str, sequence: i64, hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    for field in [aggregate_type, aggregate_id] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(sequence.to_be_bytes());
    hasher.update(hash);
    hasher.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// A whole tree, every level kept, so that any leaf's path is read without hashing.
#[derive(Debug, Clone)]
pub struct Tree {
    /// `levels[0]` are the leaf hashes; each next level pairs the one below, an odd last
    /// node moving up unchanged (which gives RFC 9162's tree).
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node(left, right),
                    [single] => *single,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(above);
        }
        Tree { levels }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The tree head; the hash of nothing for an empty tree.
    pub fn root(&self) -> Hash {
        match self.levels.last().and_then(|top| top.first()) {
            Some(root) if self.size() > 0 => *root,
            _ => Sha256::digest([]).into(),
        }
    }

    /// The audit path of leaf `index`, nearest the leaf first; `None` past the last leaf.
    pub fn path(&self, index: u64) -> Option<Vec<Hash>> {
        if index >= self.size() {
            return None;
        }
        let mut path = Vec::new();
        let mut at = usize::try_from(index).ok()?;
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            let sibling = at ^ 1;
            if let Some(hash) = level.get(sibling) {
                path.push(*hash);
            }
            at /= 2;
        }
        Some(path)
    }
}

/// Whether `path` proves that `leaf` is leaf `index` of the tree of `size` leaves whose
/// head is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Hash {
        head_leaf("CreditAccount", &i.to_string(), 1, &[7; 32])
    }

    /// RFC 9162's definition, recursively: the reference the level-wise tree must equal.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                // The largest power of two below n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn the_tree_is_rfc_9162s_and_every_path_verifies() {
        for n in 0..=70u64 {
            let leaves: Vec<Hash> = (0..n).map(leaf).collect();
            let tree = Tree::new(leaves.clone());
            assert_eq!(tree.root(), mth(&leaves), "root of {n}");
            for i in 0..n {
                let path = tree.path(i).expect("a path");
                assert!(
                    verify_inclusion(&leaves[i as usize], i, n, &path, &tree.root()),
                    "leaf {i} of {n}"
                );
                // Any other leaf or index fails.
                assert!(!verify_inclusion(&leaf(n + 1), i, n, &path, &tree.root()));
                if n > 1 {
                    assert!(!verify_inclusion(
                        &leaves[i as usize],
                        (i + 1) % n,
                        n,
                        &path,
                        &tree.root()
                    ));
                }
                // (A wrong tree size may still fit a path: the size is not the path's to
                // prove but the signature's, which covers it.)
                if let Some((first, rest)) = path.split_first() {
                    let mut flipped = *first;
                    flipped[0] ^= 1;
                    let mut bad = vec![flipped];
                    bad.extend_from_slice(rest);
                    assert!(!verify_inclusion(
                        &leaves[i as usize],
                        i,
                        n,
                        &bad,
                        &tree.root()
                    ));
                }
            }
            assert!(tree.path(n).is_none());
        }
    }

    #[test]
    fn the_head_leaf_covers_every_field() {
        let base = head_leaf("User", "a", 3, &[1; 32]);
        assert_ne!(base, head_leaf("Use", "ra", 3, &[1; 32]));
        assert_ne!(base, head_leaf("User", "a", 4, &[1; 32]));
        assert_ne!(base, head_leaf("User", "a", 3, &[2; 32]));
    }
}
