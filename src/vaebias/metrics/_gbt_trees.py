"""The trees of :mod:`vaebias.metrics._gbt`: binning of the codes and the level-wise growth
of one boosting stage's regression trees, with the exact float64 search around each binned
split. The definitions they reproduce (sklearn's ``tree/_splitter.pyx``) are in
:mod:`vaebias.metrics._gbt`'s docstring."""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["Binned", "TreeGrower", "bin_edges"]

# sklearn/tree/_partitioner.pxd FEATURE_THRESHOLD: values closer are never split apart.
_FEATURE_THRESHOLD = 1e-7
# Exact searches around a node's chosen split: bins either side of the winning edge,
# per depth (the root's splits carry most of the importance) ...
_WINDOW_BINS = (8, 4, 2)
# ... and bins at either end of the node's range on its ancestors' split features.
_BOUNDARY_BINS = 1
# Features whose float32 score is within this fraction of the best are refined too.
_TIE_TOLERANCE = 1e-5
# Gains within this fraction are ties, which go to the lowest threshold, as in sklearn.
_SAME_GAIN = 1e-12
# At most this many bins: float64 histograms (exact near-tie decisions).
_FLOAT64_MAX_BINS = 64
_BLOCK = 64  # columns per sparse product (wider blocks fall out of the CPU cache)
_CHUNK = 32  # nodes per vectorised split scan (keeps its arrays in the L2 cache)


# -------------------------------------------------------------------- binning
def bin_edges(col: np.ndarray, max_bins: int) -> np.ndarray:
    """Sorted thresholds of one feature; value x falls left of edge e iff x <= e.

    At most ``max_bins`` distinct values: every midpoint between consecutive distinct
    values (sklearn's candidate thresholds). More: the midpoints at the value changes
    nearest to the equal-frequency positions ``j N / max_bins``, j = 1 .. max_bins - 1
    (a value repeated on >= 2 N / max_bins points thereby gets a bin of its own).
    """
    s = np.sort(col)
    starts = np.flatnonzero(s[1:] > s[:-1]) + 1  # positions where a new value begins
    if starts.size >= max_bins:
        targets = np.arange(1, max_bins) * (s.size / max_bins)
        after = np.minimum(np.searchsorted(starts, targets, side="left"), starts.size - 1)
        before = np.maximum(after - 1, 0)
        use_before = np.abs(starts[before] - targets) <= np.abs(starts[after] - targets)
        starts = np.unique(np.where(use_before, starts[before], starts[after]))
    lo, hi = s[starts - 1], s[starts]
    edges = lo / 2.0 + hi / 2.0  # sklearn's threshold: the sum of halves
    return np.where(edges >= hi, lo, edges)


class Binned:
    """Bins of the train codes, and their sorted order for the exact searches.

    ``train`` int64 (N, d) bin indices; ``n_bins`` the common bin count (>= 1);
    ``bounds`` (d, n_bins + 1): bin b of feature f holds the values in
    ``(bounds[f, b], bounds[f, b + 1]]`` (-inf/+inf at the ends and as padding);
    ``single`` (d, n_bins) whether the bin's training values are all equal.
    Compressed value order, flat over (feature, slot), ``width`` slots per feature:
    each sample of a multi-valued bin (``comp_sample``) and one placeholder (-1) per
    single-valued bin, with its value ``comp_x`` and bin ``comp_bin``; bin b of
    feature f occupies slots ``cstart[f, b] : cstart[f, b + 1]``.
    """

    def __init__(self, x_train: np.ndarray, max_bins: int):
        n, d = x_train.shape
        edge_list = [bin_edges(x_train[:, f], max_bins) for f in range(d)]
        self.n_bins = nb = max(e.size for e in edge_list) + 1
        self.train = np.empty(x_train.shape, dtype=np.int64)
        self.bounds = np.full((d, nb + 1), np.inf)
        self.bounds[:, 0] = -np.inf
        self.single = np.zeros((d, nb), dtype=bool)
        start = np.zeros((d, nb + 1), dtype=np.int64)  # bins' first ranks in value order
        order = np.empty((d, n), dtype=np.int64)
        for f, edges in enumerate(edge_list):
            col = x_train[:, f]
            self.train[:, f] = np.searchsorted(edges, col, side="left")
            self.bounds[f, 1 : edges.size + 1] = edges
            order[f] = np.argsort(col, kind="stable")
            start[f, 1:] = np.cumsum(np.bincount(self.train[:, f], minlength=nb))
            lo = col[order[f, np.minimum(start[f, :-1], n - 1)]]  # each bin's minimum
            hi = col[order[f, np.maximum(start[f, 1:] - 1, 0)]]  # ... and maximum
            self.single[f] = (lo == hi) & (start[f, 1:] > start[f, :-1])
        slots = np.where(self.single, 1, np.diff(start, axis=1))
        self.cstart = np.zeros((d, nb + 1), dtype=np.int64)
        self.cstart[:, 1:] = np.cumsum(slots, axis=1)
        self.width = width = max(int(self.cstart[:, -1].max()), 1)
        comp_sample = np.full((d, width), -1, dtype=np.int64)
        comp_x = np.zeros((d, width))
        comp_bin = np.zeros((d, width), dtype=np.int64)
        for f in range(d):
            multi = np.repeat(~self.single[f], np.diff(start[f]))  # per rank
            keep = multi.copy()
            keep[start[f, :-1][self.single[f]]] = True  # a single bin's first rank stays
            ranks = np.flatnonzero(keep)
            comp_sample[f, : ranks.size] = np.where(multi[ranks], order[f, ranks], -1)
            comp_x[f, : ranks.size] = x_train[order[f, ranks], f]
            comp_bin[f, : ranks.size] = self.train[order[f, ranks], f]
        self.comp_sample = comp_sample.ravel()
        self.comp_x = comp_x.ravel()
        self.comp_bin = comp_bin.ravel()


# ---------------------------------------------------------------- the booster
class TreeGrower:
    """Grows the trees of one boosting stage (one per class, or one for K = 2) together.

    Level by level, for every node of every tree: gradient and count histograms per
    (feature, bin), layout (nodes, d, n_bins) -> best bin edge by the squared-error
    gain -> exact float64 search of the chosen feature around that edge, plus the
    node's range ends on its ancestors' features -> routing of the train and test
    samples by the chosen threshold.
    """

    def __init__(self, x_train, x_test, binned: Binned, max_depth: int, rng):
        n, d = x_train.shape
        self.n, self.d, self.nb = n, d, binned.n_bins
        self.x_flat = x_train.ravel()
        self.x_test_flat = x_test.ravel()
        self.row_off = (np.arange(n, dtype=np.int64) * d)[:, None]
        self.row_off_test = (np.arange(x_test.shape[0], dtype=np.int64) * d)[:, None]
        self.bins = binned
        self.max_depth = max_depth
        self.rng = rng
        nb = self.nb
        self.exact = nb <= _FLOAT64_MAX_BINS  # float64 histograms and tie rules
        self.np_dtype = np.float64 if self.exact else np.float32
        self.dtype = torch.float64 if self.exact else torch.float32
        # (d * nb, N) one-hot bin membership: bt @ V sums V's rows per (feature, bin)
        rows = (np.arange(d, dtype=np.int64) * nb)[None, :] + binned.train
        order = np.argsort(rows.T.ravel(), kind="stable")  # feature-major, then bin
        cols = np.tile(np.arange(n, dtype=np.int64), d)[order]
        counts = np.bincount(rows.ravel(), minlength=d * nb)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            self.bt = torch.sparse_csr_tensor(
                torch.from_numpy(indptr.astype(np.int32)),
                torch.from_numpy(cols.astype(np.int32)),
                torch.ones(n * d, dtype=self.dtype),
                size=(d * nb, n),
                check_invariants=False,
            )
        self.root_counts = torch.from_numpy(counts.astype(self.np_dtype)).reshape(1, d, nb)
        self.root_cumcounts = torch.cumsum(self.root_counts, dim=2)

    def _hist(self, blocks) -> torch.Tensor:
        """Sums per feature bin of the columns of (N, c_i) blocks -> (sum c_i, d, nb)."""
        outs = [(self.bt @ torch.from_numpy(b)).T for b in blocks]
        return torch.cat(outs, dim=0).reshape(-1, self.d, self.nb)

    def _best_splits(self, hs: torch.Tensor, hc: torch.Tensor, root: bool):
        """Best bin edge of each node, in chunks of nodes.

        hs, hc: (C, d, nb) gradient sums and counts. Returns the entries (node,
        feature, edge: left = bins <= edge, rank) of every node with a valid edge
        (both sides non-empty, positive gain): its best feature and any whose score
        is within ``_TIE_TOLERANCE`` of it, ranked in a random feature order (sklearn
        meets features in a random order and keeps the first best); and the
        cumulative sums ``cs``, ``cn`` (C, d, nb).
        """
        c_count = hs.shape[0]
        cs = torch.empty_like(hs)
        cn = self.root_cumcounts.expand(c_count, -1, -1) if root else torch.empty_like(hc)
        best = torch.empty((c_count, self.d), dtype=hs.dtype)
        edge = torch.empty((c_count, self.d), dtype=torch.int64)
        valid = torch.empty((c_count, self.d), dtype=torch.bool)
        for c0 in range(0, c_count, _CHUNK):
            c1 = min(c0 + _CHUNK, c_count)
            cs_c = torch.cumsum(hs[c0:c1], dim=2, out=cs[c0:c1])
            cn_c = cn[c0:c1] if root else torch.cumsum(hc[c0:c1], dim=2, out=cn[c0:c1])
            s_tot = cs_c[:, :, -1:]  # node gradient sum, per feature (rounding differs)
            n_tot = cn_c[:, :1, -1:]  # node size (exact)
            nl = cn_c[:, :, :-1]
            # n_L n_R / n (mean_L - mean_R)^2 = (S_L n - n_L S)^2 / (n n_L n_R); the
            # node's 1/n does not change its ranking. An empty side scores exactly 0:
            # S_L = n_L = 0, or S_L = S (a cumulative sum adding zeros) and n_L = n.
            score = torch.addcmul(cs_c[:, :, :-1] * n_tot, nl, s_tot, value=-1.0).square_()
            score.div_((nl * (n_tot - nl)).clamp_(min=1.0))
            best_c, edge_c = score.max(dim=2)
            if self.exact:  # ties (discrete codes) go to the lowest edge, as in sklearn
                edge_c = (score >= best_c[:, :, None] * (1.0 - _SAME_GAIN)).byte().argmax(dim=2)
            n_left = nl.gather(2, edge_c[:, :, None])[:, :, 0]
            best[c0:c1], edge[c0:c1] = best_c, edge_c
            valid[c0:c1] = (best_c > 0) & (n_left >= 1) & (n_left <= n_tot[:, :, 0] - 1)
        valid = valid.numpy()
        best = np.where(valid, best.numpy(), -1.0)
        contender = valid & (best >= best.max(axis=1, keepdims=True) * (1.0 - _TIE_TOLERANCE))
        node, feat = np.nonzero(contender)
        perm_rank = np.argsort(self.rng.permutation(self.d))
        # the lowest edge with the same partition (vectorised kernels round equal
        # scores differently): its bin is the node's last non-empty one on the left
        counts = cn[torch.from_numpy(node), torch.from_numpy(feat), :-1].numpy()
        n_left = counts[np.arange(node.size), edge.numpy()[node, feat]]
        edge = (counts < n_left[:, None]).sum(axis=1)
        return node, feat, edge, perm_rank[feat], cs, cn

    def _refine(self, g, idx, key, level, ent, f, b, b2, lo, hi, hs, hc, cs, cn):
        """Exact (float64) threshold and impurity decrease of each entry's split.

        Entry: node ``ent`` (flat node index ``key``), feature f, bin edge b (left =
        bins <= b, the fallback) and windows of bins lo..b and b2..hi (b2 > hi: none)
        whose thresholds are all tried: the node's samples of multi-valued bins one by
        one, a single-valued bin as one item with its node sums from the histograms.
        Candidate thresholds are the midpoints between consecutive values more than
        1e-7 apart. Items sit in a dense (entries, slots) layout in value order.
        Returns thresholds, impurity decreases ``n_L n_R / n (mean_L - mean_R)^2`` and
        whether any window threshold was found, per entry.
        """
        binned = self.bins
        a = ent.size
        rows = np.arange(a)
        ent_t, f_t = torch.from_numpy(ent), torch.from_numpy(f)
        hc_f = hc[ent_t, f_t].numpy().astype(np.float64)  # (A, nb)
        hs_f = hs[ent_t, f_t].numpy().astype(np.float64)
        cs_f = cs[ent_t, f_t].numpy().astype(np.float64)
        cn_f = cn[ent_t, f_t].numpy().astype(np.float64)
        base_s = cs_f[rows, lo] - hs_f[rows, lo]  # the bins left of the window
        base_n = cn_f[rows, lo] - hc_f[rows, lo]
        s_tot, n_tot = cs_f[:, -1], cn_f[:, -1]
        # fallback: the bin edge b and its gain
        thr = binned.bounds[f, b + 1].copy()
        nl_b = cn_f[rows, b]
        dev_b = cs_f[rows, b] - nl_b * s_tot / n_tot
        gain = n_tot * dev_b**2 / np.maximum(nl_b * (n_tot - nl_b), 1.0)
        # slots of bins lo..b, then of bins b2..hi (bins between are empty in the node)
        first_l = f * binned.width + binned.cstart[f, lo]
        len_l = binned.cstart[f, b + 1] - binned.cstart[f, lo]
        first_r = f * binned.width + binned.cstart[f, np.minimum(b2, hi + 1)]
        len_r = np.maximum(binned.cstart[f, hi + 1] - binned.cstart[f, np.minimum(b2, hi + 1)], 0)
        span = np.arange(int((len_l + len_r).max()))[None, :]
        inside = span < (len_l + len_r)[:, None]  # (A, L)
        pos = np.where(span >= len_l[:, None], (first_r - len_l)[:, None], first_l[:, None])
        pos = np.where(inside, pos + span, first_l[:, None])
        sample = binned.comp_sample[pos]
        placeholder = sample < 0
        cell = np.maximum(sample, 0) * g.shape[1] + (key >> level)[:, None]  # (sample, tree)
        member = inside & ~placeholder
        if level > 0:  # at the roots every sample is in the node
            member &= idx.ravel()[cell] == key[:, None]
        gv = np.where(member, g.ravel()[cell], 0.0)
        cnt = member.astype(np.float64)
        single = inside & placeholder
        if single.any():
            wbin = binned.comp_bin[pos]
            gv = np.where(single, hs_f[rows[:, None], wbin], gv)
            cnt = np.where(single, hc_f[rows[:, None], wbin], cnt)
        present = cnt > 0
        xv = binned.comp_x[pos]
        # the value of the row's next present item (+inf after the last)
        nxt = np.minimum.accumulate(np.where(present, xv, np.inf)[:, ::-1], axis=1)[:, ::-1]
        nxt = np.concatenate([nxt[:, 1:], np.full((a, 1), np.inf)], axis=1)
        nl = base_n[:, None] + np.cumsum(cnt, axis=1)
        nr = n_tot[:, None] - nl
        ok = present & (nxt > xv + _FEATURE_THRESHOLD) & (nxt < np.inf)
        ok &= (nl >= 1.0) & (nr >= 1.0)
        dev = base_s[:, None] + np.cumsum(gv, axis=1) - nl * (s_tot / n_tot)[:, None]
        cand = np.where(ok, dev * dev / np.where(ok, nl * nr, 1.0), -np.inf)
        top = cand.max(axis=1, keepdims=True)
        p = np.argmax(cand >= top - np.abs(top) * _SAME_GAIN, axis=1)  # the lowest of ties
        found = ok[rows, p]
        lo_v, hi_v = xv[rows, p], nxt[rows, p]
        mid = lo_v / 2.0 + hi_v / 2.0  # sklearn's threshold: the sum of halves
        mid = np.where(mid >= hi_v, lo_v, mid)
        return (np.where(found, mid, thr), np.where(found, n_tot * cand[rows, p], gain),
                found)

    def _with_boundary_windows(self, anc, hc, entries):
        """``entries`` (ent, f, b, b2, lo, hi, rank, boundary) plus, for every node and
        each distinct feature its ancestors split on, exact-search windows of
        ``_BOUNDARY_BINS`` bins at both ends of the node's occupied range."""
        d, nb = self.d, self.nb
        ent = entries[0]
        parts = [entries]
        nodes_all = np.unique(ent)
        for j in range(anc.shape[1]):
            fa = anc[nodes_all, j]
            fresh = ~(anc[nodes_all, :j] == fa[:, None]).any(axis=1)
            nodes, fa = nodes_all[fresh], fa[fresh]
            occupied = hc[torch.from_numpy(nodes), torch.from_numpy(fa)].numpy() > 0
            first_bin = np.argmax(occupied, axis=1)
            last_bin = nb - 1 - np.argmax(occupied[:, ::-1], axis=1)
            end_lo = np.minimum(first_bin + _BOUNDARY_BINS - 1, last_bin)
            start_hi = np.maximum(last_bin - _BOUNDARY_BINS + 1, first_bin)
            for w_lo, w_hi in ((first_bin, end_lo), (start_hi, last_bin)):
                parts.append((nodes, fa, w_hi, w_hi + 1, w_lo, w_hi,
                              np.full(nodes.size, d), np.ones(nodes.size, bool)))
        return tuple(np.concatenate(x) for x in zip(*parts))

    def _child_histograms(self, g_h, idx, depth, sel, left_key, hs, hc):
        """The next level's histograms: the left children's (``left_key``) from sparse
        products, the right ones' by subtraction from their parents' (``sel``)."""
        a = sel.size
        g_blocks, c_blocks = [], []
        for i in range(0, a, _BLOCK):
            kk = left_key[i : i + _BLOCK]
            left = idx[:, kk >> depth] == kk  # column t holds tree t's node indices
            c_blocks.append(left.astype(self.np_dtype))
            g_blocks.append(g_h[:, kk >> depth] * c_blocks[-1])
        h = self._hist(g_blocks + c_blocks)  # (2A, d, nb): [gradient | count] rows
        sel_t = torch.from_numpy(sel)
        return torch.cat([h[:a], hs[sel_t] - h[:a]]), torch.cat([h[a:], hc[sel_t] - h[a:]])

    def grow(self, g: np.ndarray):
        """Grow one tree per column of the negative gradient g (N, T) float64.

        Returns the flat leaf index ``t * 2**max_depth + leaf`` of every train (N, T)
        and test (M, T) sample, and the trees' summed unnormalised importances (d,).
        """
        n, t_count = g.shape
        d, nb = self.d, self.nb
        imp = np.zeros(d)
        # flat node index t * 2**level + j; a child is 2 * parent + (went right)
        idx = np.broadcast_to(np.arange(t_count, dtype=np.int64), (n, t_count))
        idx_te = np.broadcast_to(np.arange(t_count, dtype=np.int64),
                                 (self.row_off_test.shape[0], t_count))
        if nb < 2:  # every feature constant: no tree can split
            return idx << self.max_depth, idx_te << self.max_depth, imp
        g_h = g.astype(self.np_dtype)
        key = np.arange(t_count)  # the candidate nodes: every tree's root
        anc = np.zeros((t_count, 0), dtype=np.int64)  # features their ancestors split on
        hs = self._hist([np.ascontiguousarray(g_h[:, i : i + _BLOCK])
                         for i in range(0, t_count, _BLOCK)])
        hc = self.root_counts.expand(t_count, -1, -1)
        depth = 0  # the depth of the nodes the samples sit in
        for level in range(self.max_depth):
            ent, f, b, rank, cs, cn = self._best_splits(hs, hc, root=level == 0)
            if ent.size == 0:
                break
            # exact search windows around the edge: from b - w + 1 to the node's first
            # non-empty bin b2 after b, plus w - 1
            cnt_row = hc[torch.from_numpy(ent), torch.from_numpy(f)].numpy()
            later = (np.arange(nb)[None, :] > b[:, None]) & (cnt_row > 0)
            b2 = np.argmax(later, axis=1)
            w = _WINDOW_BINS[min(level, len(_WINDOW_BINS) - 1)]
            lo = np.maximum(b - (w - 1), 0)
            hi = np.minimum(b2 + (w - 1), nb - 1)
            boundary = np.zeros(ent.size, dtype=bool)
            if anc.shape[1] and _BOUNDARY_BINS:
                ent, f, b, b2, lo, hi, rank, boundary = self._with_boundary_windows(
                    anc, hc, (ent, f, b, b2, lo, hi, rank, boundary))
            thr = np.empty(ent.size)
            gain = np.empty(ent.size)
            for part in (~boundary, boundary):  # similar window lengths together
                if part.any():
                    e = ent[part]
                    thr[part], gain[part], found = self._refine(
                        g, idx, key[e], level, e, f[part], b[part], b2[part], lo[part],
                        hi[part], hs, hc, cs, cn,
                    )
                    gain[part] = np.where(boundary[part] & ~found, -np.inf, gain[part])
            # per node, the entry of largest exact gain (ties: the lower rank)
            order = np.lexsort((rank, -gain, ent))
            pick = order[np.r_[True, ent[order][1:] != ent[order][:-1]]]
            pick = pick[gain[pick] > 0]
            if pick.size == 0:
                break
            sel, f, thr = ent[pick], f[pick], thr[pick]
            imp += np.bincount(f, weights=gain[pick], minlength=d) / n
            key = key[sel]  # flat index of the nodes that split
            size = t_count << level
            feat_tab = np.zeros(size, dtype=np.int64)
            feat_tab[key] = f
            thr_tab = np.full(size, np.inf)  # a node that does not split sends all left
            thr_tab[key] = thr
            xv = self.x_flat[self.row_off + feat_tab[idx]]
            idx = 2 * idx + (xv > thr_tab[idx])
            xv_te = self.x_test_flat[self.row_off_test + feat_tab[idx_te]]
            idx_te = 2 * idx_te + (xv_te > thr_tab[idx_te])
            depth = level + 1
            if depth == self.max_depth:
                break
            # next level's candidates: the children of the nodes just split; left
            # children's histograms from sparse products, right ones by subtraction
            left_key = 2 * key
            hs, hc = self._child_histograms(g_h, idx, depth, sel, left_key, hs, hc)
            key = np.concatenate([left_key, left_key + 1])
            anc = np.concatenate([anc[sel], f[:, None]], axis=1)
            anc = np.concatenate([anc, anc])
        # samples sit at depth `depth`; an unsplit node sends everything left
        shift = self.max_depth - depth
        return idx << shift, idx_te << shift, imp
