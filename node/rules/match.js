'use strict';
// SkillSwap's rule-based compatibility score: the fallback when the model is
// unavailable or too slow, and a feature next to the model's score.
//
// A profile is { id, name, bio, offered, wanted, availability }; offered and
// wanted are lists of skills, each a string ("Python") or an object
// { name, level } (also accepted: skill/title for the name; the lists may be
// called offeredSkills/skillsOffered/offers, wantedSkills/skillsWanted/wants).
// availability is a list of strings ("weekends", "Mon evening") or one string
// (split on commas).
//
// The math. Skill names are compared after normalizing: lower case, trimmed,
// inner whitespace collapsed ("  Web   Design" == "web design"). Levels are
// beginner=1, intermediate=2, advanced=3, expert=4 (numbers 1-4 are taken as
// is; anything else counts as "no level").
//
//   covers(X, Y) = sum over each skill w that Y wants, with X offering a skill
//                  o of the same name, of credit(o, w); credit = 1 when either
//                  level is missing or level(o) >= level(w), else 0.5 (a
//                  teacher below the level asked for still helps, half as much).
//   give(X, Y)   = covers(X, Y) / |wanted(Y)|      (0 when Y wants nothing)
//
//   mutual     = harmonic mean of give(A, B) and give(B, A)
//              = 2ab / (a + b), 0 when a + b = 0.
//                Both directions must be served: one-way help scores 0, and
//                the weaker direction dominates.
//   overlap    = Jaccard index of all the skills each user mentions:
//                |S_A ∩ S_B| / |S_A ∪ S_B| with S = offered ∪ wanted
//                (names only), 0 when both are empty.
//   completion = mean over the two users of the share of filled fields among
//                name, bio, offered (>= 1 skill), wanted (>= 1), availability
//                (>= 1): each user is 0, 0.2, ..., 1.
//
//   score = round(100 * (0.5 mutual + 0.3 overlap + 0.2 completion)), 0..100.
//   subscores are the three parts, each round(100 * part).
//
// Availability is not part of the score (SkillSwap's rules leave it out); the
// slots both users share are reported as commonAvailability and in reasons.

const WEIGHTS = Object.freeze({ mutual: 0.5, overlap: 0.3, completion: 0.2 });
const LEVELS = Object.freeze({ beginner: 1, novice: 1, basic: 1, intermediate: 2, advanced: 3, expert: 4 });

function normName(s) {
  return String(s).trim().toLowerCase().replace(/\s+/g, ' ');
}

function parseLevel(level) {
  if (typeof level === 'number' && Number.isFinite(level)) {
    return level >= 1 && level <= 4 ? level : null;
  }
  if (typeof level === 'string') {
    const l = level.trim().toLowerCase();
    if (l in LEVELS) {
      return LEVELS[l];
    }
    const n = Number(l);
    if (l !== '' && Number.isFinite(n) && n >= 1 && n <= 4) {
      return n;
    }
  }
  return null;
}

function firstDefined(obj, keys) {
  for (const k of keys) {
    if (obj[k] !== undefined && obj[k] !== null) {
      return obj[k];
    }
  }
  return undefined;
}

// List of skills -> Map(normalized name -> { name, level }); the first
// entry of a repeated name wins, except that a higher level replaces a lower.
function skillMap(list) {
  const map = new Map();
  let items = list;
  if (typeof items === 'string') {
    items = items.split(',');
  }
  if (!Array.isArray(items)) {
    return map;
  }
  for (const item of items) {
    let name;
    let level = null;
    if (typeof item === 'string') {
      name = item;
    } else if (item !== null && typeof item === 'object') {
      name = firstDefined(item, ['name', 'skill', 'title']);
      level = parseLevel(item.level);
    }
    if (typeof name !== 'string' || normName(name) === '') {
      continue;
    }
    const key = normName(name);
    const prev = map.get(key);
    if (prev === undefined) {
      map.set(key, { name: name.trim(), level });
    } else if (level !== null && (prev.level === null || level > prev.level)) {
      prev.level = level;
    }
  }
  return map;
}

function stringList(v) {
  let items = v;
  if (typeof items === 'string') {
    items = items.split(',');
  }
  if (!Array.isArray(items)) {
    return [];
  }
  return items.filter((s) => typeof s === 'string' && s.trim() !== '').map((s) => s.trim());
}

/** Any accepted profile shape -> { id, name, bio, offered: Map, wanted: Map, availability: string[] }. */
function normalizeProfile(p) {
  const o = p !== null && typeof p === 'object' ? p : {};
  const text = (v) => (typeof v === 'string' ? v.trim() : typeof v === 'number' ? String(v) : '');
  return {
    id: o.id ?? null,
    name: text(o.name),
    bio: text(o.bio),
    offered: skillMap(firstDefined(o, ['offered', 'offeredSkills', 'skillsOffered', 'offers'])),
    wanted: skillMap(firstDefined(o, ['wanted', 'wantedSkills', 'skillsWanted', 'wants'])),
    availability: stringList(o.availability),
  };
}

function credit(offer, want) {
  if (offer.level === null || want.level === null || offer.level >= want.level) {
    return 1;
  }
  return 0.5;
}

// What teacher can teach learner: the matched skills and give(teacher, learner).
function gives(teacher, learner) {
  const skills = [];
  let sum = 0;
  for (const [key, want] of learner.wanted) {
    const offer = teacher.offered.get(key);
    if (offer !== undefined) {
      const c = credit(offer, want);
      sum += c;
      skills.push({ skill: offer.name, credit: c });
    }
  }
  const share = learner.wanted.size === 0 ? 0 : sum / learner.wanted.size;
  return { share, skills };
}

function completeness(p) {
  const filled = [
    p.name !== '',
    p.bio !== '',
    p.offered.size > 0,
    p.wanted.size > 0,
    p.availability.length > 0,
  ].filter(Boolean).length;
  return filled / 5;
}

function pct(x) {
  return Math.round(100 * x);
}

function label(p, fallback) {
  return p.name !== '' ? p.name : p.id !== null ? String(p.id) : fallback;
}

/**
 * Rule-based score of two profiles:
 * { score, reasons[], subscores: { mutual, overlap, completion }, source: 'rules',
 *   details: { aTeachesB[], bTeachesA[], sharedSkills[], commonAvailability[] } }.
 */
function matchScore(profileA, profileB) {
  const a = normalizeProfile(profileA);
  const b = normalizeProfile(profileB);

  const ab = gives(a, b);
  const ba = gives(b, a);
  const mutual = ab.share + ba.share === 0 ? 0 : (2 * ab.share * ba.share) / (ab.share + ba.share);

  const sa = new Set([...a.offered.keys(), ...a.wanted.keys()]);
  const sb = new Set([...b.offered.keys(), ...b.wanted.keys()]);
  const shared = [...sa].filter((k) => sb.has(k));
  const union = new Set([...sa, ...sb]);
  const overlap = union.size === 0 ? 0 : shared.length / union.size;

  const completion = (completeness(a) + completeness(b)) / 2;

  const score = pct(WEIGHTS.mutual * mutual + WEIGHTS.overlap * overlap + WEIGHTS.completion * completion);

  const availB = new Set(b.availability.map(normName));
  const commonAvailability = a.availability.filter((s) => availB.has(normName(s)));

  const nameA = label(a, 'A');
  const nameB = label(b, 'B');
  const display = (key) => (a.offered.get(key) ?? a.wanted.get(key) ?? b.offered.get(key) ?? b.wanted.get(key)).name;
  const reasons = [];
  const teachList = (g) =>
    g.skills.map((s) => (s.credit < 1 ? `${s.skill} (below the level asked for)` : s.skill)).join(', ');
  if (ab.skills.length > 0) {
    reasons.push(`${nameA} can teach ${nameB}: ${teachList(ab)}`);
  }
  if (ba.skills.length > 0) {
    reasons.push(`${nameB} can teach ${nameA}: ${teachList(ba)}`);
  }
  if (ab.skills.length > 0 && ba.skills.length > 0) {
    reasons.push('The exchange works both ways');
  } else if (ab.skills.length > 0 || ba.skills.length > 0) {
    reasons.push('One-way match only: no mutual exchange');
  } else {
    reasons.push('Neither offers what the other wants');
  }
  if (shared.length > 0) {
    reasons.push(`Skills both mention: ${shared.map(display).join(', ')}`);
  }
  if (commonAvailability.length > 0) {
    reasons.push(`Both available: ${commonAvailability.join(', ')}`);
  }
  if (completion < 1) {
    reasons.push(`Profiles are ${pct(completion)}% complete`);
  }

  return {
    score,
    reasons,
    subscores: { mutual: pct(mutual), overlap: pct(overlap), completion: pct(completion) },
    source: 'rules',
    details: {
      aTeachesB: ab.skills.map((s) => s.skill),
      bTeachesA: ba.skills.map((s) => s.skill),
      sharedSkills: shared.map(display),
      commonAvailability,
    },
  };
}

/**
 * Candidates ranked by matchScore(user, candidate), best first; ties keep the
 * input order. Each entry: { id, name, index (position in candidates), rank, ...matchScore }.
 */
function rankMatches(user, candidates) {
  if (!Array.isArray(candidates)) {
    return [];
  }
  return candidates
    .map((c, index) => {
      const n = normalizeProfile(c);
      return { id: n.id, name: n.name, index, ...matchScore(user, c) };
    })
    .sort((x, y) => y.score - x.score || x.index - y.index)
    .map((m, i) => ({ ...m, rank: i + 1 }));
}

/** Profile summary for prompts: "Name — bio. Offers: x (advanced), y. Wants: z. Available: ...". */
function describeProfile(profile) {
  const p = normalizeProfile(profile);
  const levelNames = ['', 'beginner', 'intermediate', 'advanced', 'expert'];
  const skills = (m) =>
    [...m.values()]
      .map((s) => (s.level !== null ? `${s.name} (${levelNames[Math.round(s.level)] ?? s.level})` : s.name))
      .join(', ') || 'none';
  const parts = [`${label(p, 'Unnamed')}${p.bio !== '' ? ` - ${p.bio}` : ''}`];
  parts.push(`Offers: ${skills(p.offered)}.`);
  parts.push(`Wants: ${skills(p.wanted)}.`);
  if (p.availability.length > 0) {
    parts.push(`Available: ${p.availability.join(', ')}.`);
  }
  return parts.join(' ');
}

module.exports = { matchScore, rankMatches, normalizeProfile, describeProfile, WEIGHTS };
