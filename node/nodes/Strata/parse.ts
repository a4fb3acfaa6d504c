// Reading structured answers out of model text. The engine's JSON mode
// guarantees well-formed JSON only up to where generation stopped, and says
// nothing of the shape, so every reader here accepts what it can and returns
// undefined for the rest: the caller then falls back to rules.

/**
 * The first JSON value in text: the whole text if it parses, else the first
 * balanced {...} or [...] span that parses, else a truncated object closed
 * by appending the missing brackets (generation that hit maxTokens).
 */
export function extractJson(text: string): unknown {
	const trimmed = text.trim();
	if (trimmed === '') {
		return undefined;
	}
	const whole = tryParse(trimmed);
	if (whole !== undefined) {
		return whole;
	}
	for (let start = 0; start < trimmed.length; start++) {
		const c = trimmed[start];
		if (c !== '{' && c !== '[') {
			continue;
		}
		const end = balancedEnd(trimmed, start);
		if (end > 0) {
			const v = tryParse(trimmed.slice(start, end + 1));
			if (v !== undefined) {
				return v;
			}
		} else {
			const repaired = closeTruncated(trimmed.slice(start));
			if (repaired !== undefined) {
				return repaired;
			}
		}
	}
	return undefined;
}

function tryParse(s: string): unknown {
	try {
		return JSON.parse(s) as unknown;
	} catch {
		return undefined;
	}
}

// Index of the bracket closing the one at start, or -1; strings respected.
function balancedEnd(s: string, start: number): number {
	const stack: string[] = [];
	let inString = false;
	for (let i = start; i < s.length; i++) {
		const c = s[i];
		if (inString) {
			if (c === '\\') {
				i++;
			} else if (c === '"') {
				inString = false;
			}
			continue;
		}
		if (c === '"') {
			inString = true;
		} else if (c === '{' || c === '[') {
			stack.push(c === '{' ? '}' : ']');
		} else if (c === '}' || c === ']') {
			if (stack.pop() !== c) {
				return -1;
			}
			if (stack.length === 0) {
				return i;
			}
		}
	}
	return -1;
}

// A prefix of a JSON document closed up: drop a dangling partial member,
// close an open string, then every open bracket.
function closeTruncated(s: string): unknown {
	const stack: string[] = [];
	let inString = false;
	for (let i = 0; i < s.length; i++) {
		const c = s[i];
		if (inString) {
			if (c === '\\') {
				i++;
			} else if (c === '"') {
				inString = false;
			}
			continue;
		}
		if (c === '"') {
			inString = true;
		} else if (c === '{' || c === '[') {
			stack.push(c === '{' ? '}' : ']');
		} else if (c === '}' || c === ']') {
			stack.pop();
		}
	}
	if (stack.length === 0) {
		return undefined;
	}
	const closers = stack.reverse().join('');
	const attempts = [s + (inString ? '"' : '') + closers];
	// cut back to the last complete member
	const lastComma = s.lastIndexOf(',');
	if (lastComma > 0) {
		attempts.push(s.slice(0, lastComma) + closers);
	}
	for (const a of attempts) {
		const v = tryParse(a);
		if (v !== undefined) {
			return v;
		}
	}
	return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
	return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Value of the first key (case-insensitive, any depth, breadth first) in names. */
export function findKey(v: unknown, names: string[]): unknown {
	const wanted = names.map((n) => n.toLowerCase());
	const queue: unknown[] = [v];
	while (queue.length > 0) {
		const cur = queue.shift();
		if (isObject(cur)) {
			for (const [k, val] of Object.entries(cur)) {
				if (wanted.includes(k.toLowerCase())) {
					return val;
				}
			}
			queue.push(...Object.values(cur));
		} else if (Array.isArray(cur)) {
			queue.push(...cur);
		}
	}
	return undefined;
}

/** A 0-100 score from a number, "85", "85%", or 0-1 / 0-10 scales. */
export function readScore(v: unknown): number | undefined {
	let n: number;
	if (typeof v === 'number') {
		n = v;
	} else if (typeof v === 'string') {
		const m = /-?\d+(\.\d+)?/.exec(v);
		if (m === null) {
			return undefined;
		}
		n = Number(m[0]);
		if (/\/\s*10\b/.test(v) && n <= 10) {
			n *= 10;
		}
	} else {
		return undefined;
	}
	if (!Number.isFinite(n) || n < 0) {
		return undefined;
	}
	if (n <= 1 && !Number.isInteger(n)) {
		n *= 100;
	}
	if (n > 100) {
		return undefined;
	}
	return Math.round(n);
}

/** Non-empty strings from a string, an array of strings/objects, trimmed. */
export function readStrings(v: unknown, max = 10): string[] {
	const out: string[] = [];
	const add = (s: unknown) => {
		if (typeof s === 'string' && s.trim() !== '' && out.length < max) {
			out.push(s.trim());
		} else if (isObject(s)) {
			const text = findKey(s, ['text', 'message', 'reason', 'content', 'starter']);
			if (typeof text === 'string') {
				add(text);
			}
		}
	};
	if (Array.isArray(v)) {
		v.forEach(add);
	} else {
		add(v);
	}
	return out;
}
