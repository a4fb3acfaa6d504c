'use strict';
// Keyword rules for SkillSwap messages: the fallback of the Moderate Message
// operation when the model is unavailable, too slow, or answers with no
// usable label. Deliberately conservative: it flags the patterns SkillSwap
// sees in scams (moving payment or contact off the platform, asking for
// credentials or money up front) and a short list of abusive words; anything
// else is "ok". Matching is on lower-cased text with word boundaries.

const SCAM = [
  [/\b(gift ?cards?|itunes cards?|steam cards?)\b/, 'asks for gift cards'],
  [/\b(wire transfer|western union|moneygram|send (me )?money|pay (me )?(first|upfront|in advance)|advance fee|deposit first)\b/, 'asks for money up front'],
  [/\b(bitcoin|btc|crypto(currency)?|usdt|ethereum|wallet address)\b/, 'mentions crypto payments'],
  [/\b(bank (details|account)|iban|credit card (number|details)|cvv|social security|ssn)\b/, 'asks for financial details'],
  [/\b(password|passcode|verification code|one[- ]time code|otp|login details)\b/, 'asks for credentials or codes'],
  [/\b(whatsapp|telegram|signal me|text me at|dm me on)\b/, 'moves the conversation off the platform'],
  [/\b(guaranteed (income|profit|returns)|double your (money|investment)|get rich|investment opportunity)\b/, 'promises easy money'],
  [/\b(bit\.ly|tinyurl\.com|t\.me\/)/, 'contains a shortened or messenger link'],
];

const ABUSE = [
  [/\b(idiot|stupid|moron|loser|dumbass|retard(ed)?)\b/, 'insults the other person'],
  [/\b(fuck(ing)?|shit|bitch|bastard|asshole|cunt)\b/, 'uses abusive language'],
  [/\b(kill (you|yourself)|i will hurt you|kys)\b/, 'contains a threat'],
  [/\b(send (me )?nudes|sexy pics|hook ?up)\b/, 'makes sexual advances'],
];

function check(text, rules) {
  const reasons = [];
  for (const [re, reason] of rules) {
    if (re.test(text)) {
      reasons.push(reason);
    }
  }
  return reasons;
}

/** Message text -> { label: 'ok'|'inappropriate'|'scam', reasons[], source: 'rules' }. */
function moderateMessage(message) {
  const text = typeof message === 'string' ? message.toLowerCase() : '';
  const scam = check(text, SCAM);
  const abuse = check(text, ABUSE);
  // scam wins: it needs the stronger action (block the sender, warn the target)
  if (scam.length > 0) {
    return { label: 'scam', reasons: [...scam, ...abuse], source: 'rules' };
  }
  if (abuse.length > 0) {
    return { label: 'inappropriate', reasons: abuse, source: 'rules' };
  }
  return { label: 'ok', reasons: ['no known scam or abuse pattern'], source: 'rules' };
}

module.exports = { moderateMessage };
