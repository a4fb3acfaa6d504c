// The rule-based SkillSwap matcher (node/rules/match.js) against examples
// worked out by hand from the formulas in its header comment.
import t from 'tap';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { matchScore, rankMatches, normalizeProfile, describeProfile, WEIGHTS } = require('../node/rules/match.js');

const alice = {
  id: 'u1',
  name: 'Alice',
  bio: 'Backend developer who wants to travel',
  offered: [{ name: 'Python', level: 'advanced' }, { name: 'Guitar', level: 'beginner' }],
  wanted: [{ name: 'Spanish', level: 'intermediate' }],
  availability: ['weekends', 'evenings'],
};
const bob = {
  id: 'u2',
  name: 'Bob',
  bio: '',
  offered: [{ name: 'spanish', level: 'expert' }],
  wanted: [{ name: 'PYTHON', level: 'intermediate' }, { name: 'Cooking' }],
  availability: ['Weekends'],
};

t.test('weights add up to 1', async (t) => {
  t.equal(WEIGHTS.mutual + WEIGHTS.overlap + WEIGHTS.completion, 1);
});

t.test('two-way exchange, hand-worked', async (t) => {
  // give(A,B): Bob wants python(2), cooking; Alice offers python(3) >= 2 -> 1 of 2 = 0.5
  // give(B,A): Alice wants spanish(2); Bob offers spanish(4) -> 1 of 1 = 1
  // mutual = 2*0.5*1/1.5 = 2/3
  // overlap: {python,guitar,spanish} vs {spanish,python,cooking}: 2/4 = 0.5
  // completion: Alice 5/5, Bob 4/5 (no bio) -> 0.9
  // score = 100*(0.5*2/3 + 0.3*0.5 + 0.2*0.9) = 33.33 + 15 + 18 = 66.33 -> 66
  const r = matchScore(alice, bob);
  t.equal(r.score, 66);
  t.same(r.subscores, { mutual: 67, overlap: 50, completion: 90 });
  t.equal(r.source, 'rules');
  t.same(r.details.aTeachesB, ['Python']);
  t.same(r.details.bTeachesA, ['spanish']);
  t.same(r.details.sharedSkills, ['Python', 'Spanish']);
  t.same(r.details.commonAvailability, ['weekends']);
  t.ok(r.reasons.includes('Alice can teach Bob: Python'));
  t.ok(r.reasons.includes('Bob can teach Alice: spanish'));
  t.ok(r.reasons.includes('The exchange works both ways'));
  t.ok(r.reasons.includes('Both available: weekends'));
  t.ok(r.reasons.includes('Profiles are 90% complete'));
  // symmetric in the score
  t.equal(matchScore(bob, alice).score, 66);
});

t.test('teacher below the level asked for gets half credit', async (t) => {
  // give(A,B): B wants python(3), sql; A offers python(1) < 3 -> 0.5 of 2 = 0.25
  // give(B,A): A wants drawing (no level); B offers drawing -> 1
  // mutual = 2*0.25*1/1.25 = 0.4
  // overlap: {python,drawing} vs {python,sql,drawing} = 2/3
  // completion: each has name, offered, wanted = 3/5 -> 0.6
  // score = 100*(0.2 + 0.2 + 0.12) = 52
  const a = { name: 'A', offered: [{ skill: 'Python', level: 1 }], wanted: ['Drawing'] };
  const b = { name: 'B', offeredSkills: ['drawing'], wantedSkills: [{ title: 'python', level: 'Advanced' }, 'SQL'] };
  const r = matchScore(a, b);
  t.equal(r.score, 52);
  t.same(r.subscores, { mutual: 40, overlap: 67, completion: 60 });
  t.ok(r.reasons.includes('A can teach B: Python (below the level asked for)'));
});

t.test('one-way help scores no mutual points', async (t) => {
  // give(A,B) = 1, give(B,A) = 0 (A wants nothing) -> mutual 0
  // overlap {guitar} vs {guitar,cooking} = 0.5; completion (2/5 + 3/5)/2 = 0.5
  // score = 100*(0 + 0.15 + 0.1) = 25
  const a = { name: 'A', offered: ['guitar'] };
  const b = { name: 'B', offered: ['cooking'], wanted: ['Guitar'] };
  const r = matchScore(a, b);
  t.equal(r.score, 25);
  t.same(r.subscores, { mutual: 0, overlap: 50, completion: 50 });
  t.ok(r.reasons.includes('One-way match only: no mutual exchange'));
});

t.test('perfect pair scores 100', async (t) => {
  const a = { name: 'A', bio: 'x', offered: ['Go'], wanted: ['Rust'], availability: 'mon, tue' };
  const b = { name: 'B', bio: 'y', offered: ['rust'], wanted: ['go'], availability: ['Tue'] };
  const r = matchScore(a, b);
  t.equal(r.score, 100);
  t.same(r.subscores, { mutual: 100, overlap: 100, completion: 100 });
  t.same(r.details.commonAvailability, ['tue']);
});

t.test('empty and malformed profiles score 0 without throwing', async (t) => {
  for (const [x, y] of [[{}, {}], [null, undefined], ['str', 42], [{ offered: 42, wanted: [null, 3, {}] }, {}]]) {
    const r = matchScore(x, y);
    t.equal(r.score, 0);
    t.same(r.subscores, { mutual: 0, overlap: 0, completion: 0 });
    t.ok(r.reasons.includes('Neither offers what the other wants'));
  }
});

t.test('skill names are normalized', async (t) => {
  const p = normalizeProfile({ offered: ['  Web   Design ', 'web design', { name: 'WEB DESIGN', level: 'expert' }] });
  t.equal(p.offered.size, 1);
  t.same(p.offered.get('web design'), { name: 'Web   Design', level: 4 });
  const r = matchScore({ offered: ['  Web   Design'], wanted: ['x'] }, { offered: ['X'], wanted: ['web design'] });
  t.equal(r.subscores.mutual, 100);
});

t.test('rankMatches sorts best first, ties in input order', async (t) => {
  const cands = [
    { id: 'c1', name: 'Nobody' },
    bob,
    { id: 'c3', name: 'Twin', bio: 'b', offered: ['Spanish'], wanted: ['Python'], availability: ['weekends'] },
    { id: 'c4', name: 'Nobody2' },
  ];
  const r = rankMatches(alice, cands);
  t.same(r.map((x) => x.id), ['c3', 'u2', 'c1', 'c4']);
  t.same(r.map((x) => x.rank), [1, 2, 3, 4]);
  t.same(r.map((x) => x.index), [2, 1, 0, 3]);
  t.equal(r[1].score, 66);
  t.equal(r[1].name, 'Bob');
  t.same(rankMatches(alice, 'nope'), []);
});

t.test('describeProfile', async (t) => {
  t.equal(
    describeProfile(alice),
    'Alice - Backend developer who wants to travel Offers: Python (advanced), Guitar (beginner). ' +
      'Wants: Spanish (intermediate). Available: weekends, evenings.',
  );
  t.equal(describeProfile({}), 'Unnamed Offers: none. Wants: none.');
});

t.test('moderateMessage keyword rules', async (t) => {
  const { moderateMessage } = require('../node/rules/moderate.js');
  t.same(moderateMessage('Hi! Happy to swap guitar lessons for Spanish on Saturday.'), {
    label: 'ok',
    reasons: ['no known scam or abuse pattern'],
    source: 'rules',
  });
  const scam = moderateMessage('Send me a $50 Gift Card first and text me at WhatsApp');
  t.equal(scam.label, 'scam');
  t.same(scam.reasons, ['asks for gift cards', 'moves the conversation off the platform']);
  const rude = moderateMessage('you are an IDIOT');
  t.same(rude, { label: 'inappropriate', reasons: ['insults the other person'], source: 'rules' });
  t.equal(moderateMessage('pay me upfront, idiot').label, 'scam');
  t.equal(moderateMessage(undefined).label, 'ok');
  // word boundaries: "skill" does not trip "kill", "classic" not "ass"
  t.equal(moderateMessage('I can teach classic skills').label, 'ok');
});
