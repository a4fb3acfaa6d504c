// Comparing two engines' next-token logits: softmax in float64, the largest
// probability difference over the whole vocabulary, logit differences, and
// the top-k lists (where a swap is only accepted between near-tied tokens).

export function softmax(logits) {
  let m = Number.NEGATIVE_INFINITY;
  for (const v of logits) if (v > m) m = v;
  const p = new Float64Array(logits.length);
  let s = 0;
  for (let i = 0; i < logits.length; i++) {
    p[i] = Math.exp(logits[i] - m);
    s += p[i];
  }
  for (let i = 0; i < p.length; i++) p[i] /= s;
  return p;
}

/** The k most probable ids, highest first (ties: lower id first). */
export function topK(p, k) {
  const best = [];
  for (let i = 0; i < p.length; i++) {
    if (best.length < k || p[i] > p[best[best.length - 1]]) {
      let j = best.length < k ? best.length : k - 1;
      best[j] = i;
      while (j > 0 && p[best[j]] > p[best[j - 1]]) {
        [best[j], best[j - 1]] = [best[j - 1], best[j]];
        j--;
      }
    }
  }
  return best;
}

/**
 * Compare Strata's logits (a) with the peer's (b).
 * Returns { n, maxAbsProb, atId, maxAbsLogit, logitScale, kl, topA, topB, pA, pB }.
 * logitScale is the std of b's logits, to read maxAbsLogit against.
 */
export function compareLogits(a, b, k = 5) {
  if (a.length !== b.length) {
    throw new Error(`vocabulary sizes differ: ${a.length} vs ${b.length}`);
  }
  const pA = softmax(a);
  const pB = softmax(b);
  let maxAbsProb = 0;
  let atId = 0;
  let maxAbsLogit = 0;
  let kl = 0;
  let mean = 0;
  for (let i = 0; i < a.length; i++) mean += b[i];
  mean /= b.length;
  let varB = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(pA[i] - pB[i]);
    if (d > maxAbsProb) {
      maxAbsProb = d;
      atId = i;
    }
    const dl = Math.abs(a[i] - b[i]);
    if (!(dl <= maxAbsLogit)) maxAbsLogit = dl; // NaN sticks
    if (pB[i] > 0) kl += pB[i] * Math.log(pB[i] / Math.max(pA[i], 1e-300));
    varB += (b[i] - mean) ** 2;
  }
  return {
    n: a.length,
    maxAbsProb,
    atId,
    maxAbsLogit,
    logitScale: Math.sqrt(varB / b.length),
    kl,
    topA: topK(pA, k),
    topB: topK(pB, k),
    pA,
    pB,
  };
}

/**
 * Problems with the top-k agreement of a comparison (empty when fine): the
 * lists must be equal, except that two tokens whose peer probabilities are
 * within tieTol may swap places; and each of the peer's top-k must have a
 * Strata probability within probTol.
 */
export function topKProblems(cmp, probTol, tieTol = probTol) {
  const problems = [];
  const { topA, topB, pA, pB } = cmp;
  for (let i = 0; i < topB.length; i++) {
    const ia = topA[i];
    const ib = topB[i];
    if (ia !== ib && Math.abs(pB[ia] - pB[ib]) > tieTol) {
      problems.push(`rank ${i}: strata has ${ia} (p=${pA[ia].toExponential(4)}), ` +
        `peer has ${ib} (p=${pB[ib].toExponential(4)}; peer p of ${ia} = ${pB[ia].toExponential(4)})`);
    }
    const d = Math.abs(pA[ib] - pB[ib]);
    if (!(d <= probTol)) {
      problems.push(`token ${ib} (peer rank ${i}): p ${pA[ib].toExponential(6)} vs peer ` +
        `${pB[ib].toExponential(6)} (diff ${d.toExponential(2)} > ${probTol})`);
    }
  }
  return problems;
}

/** One-line summary of a comparison for test output. */
export function describe(cmp) {
  const top = cmp.topB.map((id) => `${id}:${cmp.pB[id].toFixed(4)}`).join(' ');
  return `maxAbsProb ${cmp.maxAbsProb.toExponential(2)} (token ${cmp.atId}), ` +
    `maxAbsLogit ${cmp.maxAbsLogit.toExponential(2)} (logit std ${cmp.logitScale.toFixed(2)}), ` +
    `KL ${cmp.kl.toExponential(2)}, peer top-${cmp.topB.length} ${top}, strata top ${cmp.topA.join(',')}`;
}

/** Deterministic token ids in [lo, hi) (an LCG: the same on every machine). */
export function randomTokens(n, lo, hi, seed) {
  let s = seed >>> 0;
  const out = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(lo + (s % (hi - lo)));
  }
  return out;
}
