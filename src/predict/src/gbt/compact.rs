//! The trees of a trained booster laid out for online forecasts. Each tree becomes a perfect
//! binary tree of its own depth in breadth-first arrays (the children of split `i` are `2i+1`
//! and `2i+2`; a leaf above the last level fills every leaf slot below it), so a walk takes
//! exactly `depth` steps, with no child pointers to load and no leaf test to branch on, and the
//! rows of one forecast go through each tree in lockstep. A split is 16 bytes and a leaf 4, so
//! the 150 depth-6 trees of the default model take at most 185 KiB, where forust-ml has 80-byte
//! nodes in a vector per tree. Predictions are the booster's to the last bit (checked in the
//! tests).

use forust_ml::GradientBooster;

/// Rows walked through one tree together.
const LOCKSTEP: usize = 4;
/// The deepest tree laid out: a perfect tree of this depth has 2^16 leaf slots and 1 MiB of
/// splits.
const MAX_DEPTH: u32 = 16;
/// The most split slots all trees together may take (64 MiB): a model file that would need more
/// is refused rather than laid out.
const MAX_SPLITS: usize = 1 << 22;

#[derive(Debug, Clone, Copy, Default)]
struct Split {
    threshold: f64,
    feature: u16,
    /// Where a row whose feature is missing goes.
    missing_right: bool,
}

#[derive(Debug, Clone, Copy)]
struct Tree {
    depth: u32,
    /// Offsets of the tree's `2^depth - 1` splits and `2^depth` leaves.
    splits: usize,
    leaves: usize,
}

#[derive(Debug, Clone)]
pub struct CompactTrees {
    trees: Vec<Tree>,
    splits: Vec<Split>,
    leaves: Vec<f32>,
    base_score: f64,
    /// The value that marks a missing feature (NaN unless the booster was told otherwise).
    missing: f64,
}

/// A tree's node at `index`, checked: a model file is outside data.
fn node<N>(nodes: &[N], index: usize) -> Result<&N, String> {
    nodes
        .get(index)
        .ok_or_else(|| format!("a tree node points at node {index} of {}", nodes.len()))
}

/// The depth of the subtree at `index`; a cycle or a tree deeper than [`MAX_DEPTH`] is refused.
fn depth_of(tree: &forust_ml::tree::Tree, index: usize, level: u32) -> Result<u32, String> {
    if level > MAX_DEPTH {
        return Err(format!(
            "a tree deeper than {MAX_DEPTH} levels (or with a cycle)"
        ));
    }
    let n = node(&tree.nodes, index)?;
    if n.is_leaf {
        return Ok(0);
    }
    let left = depth_of(tree, n.left_child, level + 1)?;
    let right = depth_of(tree, n.right_child, level + 1)?;
    Ok(1 + left.max(right))
}

/// Fills the perfect tree's slot `slot` (breadth-first, at `level` of `depth`) from the node at
/// `index`.
fn lay(
    tree: &forust_ml::tree::Tree,
    index: usize,
    (slot, level, depth): (usize, u32, u32),
    splits: &mut [Split],
    leaves: &mut [f32],
) -> Result<(), String> {
    let n = node(&tree.nodes, index)?;
    if level == depth {
        // `depth_of` saw to it that only leaves reach the last level.
        leaves[slot - splits.len()] = n.weight_value;
        return Ok(());
    }
    let (left, right) = if n.is_leaf {
        // Both ways lead to this leaf's value: the split is never read for its direction.
        (index, index)
    } else {
        if n.has_missing_branch() {
            return Err("a split with a branch of its own for missing values".into());
        }
        splits[slot] = Split {
            threshold: n.split_value,
            feature: u16::try_from(n.split_feature)
                .map_err(|_| "a split on a feature beyond 65535")?,
            missing_right: n.missing_node == n.right_child && n.missing_node != n.left_child,
        };
        (n.left_child, n.right_child)
    };
    lay(tree, left, (2 * slot + 1, level + 1, depth), splits, leaves)?;
    lay(
        tree,
        right,
        (2 * slot + 2, level + 1, depth),
        splits,
        leaves,
    )
}

impl CompactTrees {
    pub fn of(booster: &GradientBooster) -> Result<CompactTrees, String> {
        let mut compact = CompactTrees {
            trees: Vec::with_capacity(booster.trees.len()),
            splits: Vec::new(),
            leaves: Vec::new(),
            base_score: booster.base_score,
            missing: booster.missing,
        };
        for tree in &booster.trees {
            let depth = depth_of(tree, 0, 0)?;
            let laid = Tree {
                depth,
                splits: compact.splits.len(),
                leaves: compact.leaves.len(),
            };
            let (split_count, leaf_count) = ((1usize << depth) - 1, 1usize << depth);
            if laid.splits + split_count > MAX_SPLITS {
                return Err(format!(
                    "the trees are too deep or too many to lay out ({} trees, more than {MAX_SPLITS} splits)",
                    booster.trees.len()
                ));
            }
            compact
                .splits
                .resize(laid.splits + split_count, Split::default());
            compact.leaves.resize(laid.leaves + leaf_count, 0.0);
            lay(
                tree,
                0,
                (0, 0, depth),
                &mut compact.splits[laid.splits..],
                &mut compact.leaves[laid.leaves..],
            )?;
            compact.trees.push(laid);
        }
        Ok(compact)
    }

    /// The highest feature index any split reads, so rows can be checked once up front.
    pub fn max_feature(&self) -> Option<usize> {
        self.trees
            .iter()
            .flat_map(|t| self.tree_splits(t))
            .map(|s| s.feature as usize)
            .max()
    }

    fn tree_splits(&self, tree: &Tree) -> &[Split] {
        &self.splits[tree.splits..tree.splits + (1 << tree.depth) - 1]
    }

    /// Raw predictions for several rows (each longer than [`Self::max_feature`]), walking each
    /// tree for up to four rows in lockstep: the walks are independent, so the CPU overlaps
    /// their loads instead of waiting on one chain of splits at a time.
    pub fn predict_rows(&self, rows: &[Vec<f64>]) -> Vec<f64> {
        let mut out = Vec::with_capacity(rows.len());
        let mut groups = rows.chunks_exact(LOCKSTEP);
        for group in &mut groups {
            out.extend(self.walk::<LOCKSTEP>(std::array::from_fn(|r| &group[r][..])));
        }
        match groups.remainder() {
            [] => {}
            [a] => out.extend(self.walk([&a[..]])),
            [a, b] => out.extend(self.walk([&a[..], &b[..]])),
            [a, b, c] => out.extend(self.walk([&a[..], &b[..], &c[..]])),
            _ => unreachable!("a remainder is shorter than LOCKSTEP"),
        }
        out
    }

    /// `N` rows through every tree; `N` is a constant so the rows' positions stay in registers.
    fn walk<const N: usize>(&self, rows: [&[f64]; N]) -> [f64; N] {
        let missing = self.missing;
        let missing_is_nan = missing.is_nan();
        let mut sums = [self.base_score; N];
        for tree in &self.trees {
            let splits = self.tree_splits(tree);
            let mut at = [0usize; N];
            for _ in 0..tree.depth {
                for r in 0..N {
                    let split = &splits[at[r]];
                    let v = rows[r][split.feature as usize];
                    let is_missing = if missing_is_nan {
                        v.is_nan()
                    } else {
                        v == missing
                    };
                    // As forust-ml: a missing value takes its own way; otherwise left when
                    // below the threshold, else right (NaN too when it does not mark a
                    // missing value).
                    let below = v < split.threshold;
                    let right = if is_missing {
                        split.missing_right
                    } else {
                        !below
                    };
                    at[r] = 2 * at[r] + 1 + usize::from(right);
                }
            }
            // Leaf slots follow the splits in breadth-first order.
            let leaves = &self.leaves[tree.leaves..];
            for r in 0..N {
                sums[r] += f64::from(leaves[at[r] - splits.len()]);
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forust_ml::objective::ObjectiveType;
    use forust_ml::Matrix;

    /// A booster trained on rows where a third of one feature's values are missing and trees
    /// of several depths grow, and the rows to predict (with missing values too).
    fn booster(max_depth: usize) -> (GradientBooster, Vec<Vec<f64>>) {
        let n = 600;
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let a = (i % 37) as f64;
                let b = if i % 3 == 0 {
                    f64::NAN
                } else {
                    (i % 11) as f64
                };
                vec![a, b, ((i * 7) % 13) as f64]
            })
            .collect();
        let y: Vec<f64> = rows
            .iter()
            .map(|r| {
                r[0] * 0.5 + if r[1].is_nan() { 9.0 } else { r[1] } + (r[2] > 6.0) as u8 as f64
            })
            .collect();
        let mut columns = Vec::new();
        for c in 0..3 {
            columns.extend(rows.iter().map(|r| r[c]));
        }
        let mut booster = GradientBooster::default()
            .set_objective_type(ObjectiveType::SquaredLoss)
            .set_iterations(30)
            .set_max_depth(max_depth)
            .set_parallel(false);
        booster
            .fit_unweighted(&Matrix::new(&columns, n, 3), &y, None)
            .unwrap();
        (booster, rows)
    }

    #[test]
    fn predictions_are_the_boosters_to_the_last_bit() {
        let mut padded = false;
        for max_depth in [1, 3, 6] {
            let (booster, rows) = booster(max_depth);
            let compact = CompactTrees::of(&booster).unwrap();
            assert!(compact.trees.iter().all(|t| t.depth as usize <= max_depth));
            assert!(compact.trees.iter().any(|t| t.depth as usize == max_depth));
            // Leaves above a tree's last level are what the padding is for.
            padded |= booster
                .trees
                .iter()
                .zip(&compact.trees)
                .any(|(tree, laid)| {
                    tree.nodes.iter().filter(|n| n.is_leaf).count() < 1 << laid.depth
                });
            let sample: Vec<Vec<f64>> = rows.iter().step_by(7).cloned().collect();
            let got = compact.predict_rows(&sample);
            assert!(got.iter().all(|p| p.is_finite()));
            assert!(got.iter().any(|p| *p != got[0]));
            for (row, got) in sample.iter().zip(got) {
                let want = booster.predict(&Matrix::new(row, 1, 3), false)[0];
                assert_eq!(got.to_bits(), want.to_bits(), "{row:?}");
            }
        }
        assert!(padded);
    }

    #[test]
    fn a_tree_pointing_outside_itself_is_refused() {
        let (mut booster, _) = booster(3);
        let root = &mut booster.trees[0].nodes[0];
        root.left_child = 10_000;
        assert!(CompactTrees::of(&booster)
            .unwrap_err()
            .contains("node 10000"));
        booster.trees[0].nodes[0].left_child = 0;
        assert!(CompactTrees::of(&booster).unwrap_err().contains("cycle"));
    }
}
