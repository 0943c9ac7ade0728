package openaitest

import (
	"math"
	"sync"
	"time"
)

// eps absorbs float rounding in bucket levels, so that a bucket refilled
// for exactly the time one request needs admits that request.
const eps = 1e-9

// limitState is one limit (requests or tokens) as the headers report it.
type limitState struct {
	limit     int           // x-ratelimit-limit-*
	remaining int           // x-ratelimit-remaining-*
	reset     time.Duration // x-ratelimit-reset-*: until the limit is back to full
}

// verdict is the limiter's answer to one request.
type verdict struct {
	ok       bool
	kind     string        // "requests" or "tokens": the limit that refused
	tooLarge bool          // the request alone exceeds the token limit
	wait     time.Duration // until the refused request would be admitted
	used     int           // of the refusing limit, at refusal
	req, tok limitState
	reqOn    bool // a request limit is configured
	tokOn    bool // a token limit is configured
}

// limiter enforces RPM and TPM, either as token buckets that start full and
// refill continuously at limit/60 a second (like the real API), or as fixed
// windows counted from start. Its methods are safe for concurrent use.
type limiter struct {
	rpm, tpm int
	window   time.Duration
	start    time.Time

	mu sync.Mutex
	// Guarded by mu. Bucket mode: levels as of last.
	reqLevel, tokLevel float64
	last               time.Time
	// Guarded by mu. Window mode: the current window and what it has used.
	win              int64
	winReqs, winToks int
}

func newLimiter(rpm, tpm int, window time.Duration, now time.Time) *limiter {
	return &limiter{
		rpm: rpm, tpm: tpm, window: window, start: now,
		reqLevel: float64(rpm), tokLevel: float64(tpm), last: now,
	}
}

// perWindow is how much of a per-minute limit one window allows: at least 1.
func (l *limiter) perWindow(perMin int) int {
	n := int(int64(perMin) * int64(l.window) / int64(time.Minute))
	return max(n, 1)
}

// take admits a request of tokens received at now and charges it, or
// refuses it and charges nothing. Requests need not be decided in the
// order they were received (one takes longer to count than another): one
// received before the limiter's latest time is decided as of that time,
// since a bucket that was full meanwhile cannot give back the refill it
// forwent.
func (l *limiter) take(now time.Time, tokens int) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.window > 0 {
		return l.takeWindow(now, tokens, true)
	}
	return l.takeBucket(now, tokens, true)
}

// peek reports the limits at now without charging anything.
func (l *limiter) peek(now time.Time) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.window > 0 {
		return l.takeWindow(now, 0, false)
	}
	return l.takeBucket(now, 0, false)
}

// takeBucket requires l.mu held.
func (l *limiter) takeBucket(now time.Time, tokens int, charge bool) verdict {
	if el := now.Sub(l.last); el > 0 {
		// Multiply before dividing so whole refills come out exact.
		l.reqLevel = min(float64(l.rpm), l.reqLevel+float64(el)*float64(l.rpm)/float64(time.Minute))
		l.tokLevel = min(float64(l.tpm), l.tokLevel+float64(el)*float64(l.tpm)/float64(time.Minute))
		l.last = now
	}
	v := verdict{ok: true, reqOn: l.rpm > 0, tokOn: l.tpm > 0}
	// need is how long the bucket takes to refill from level to want.
	need := func(level, want float64, perMin int) time.Duration {
		if level+eps >= want {
			return 0
		}
		return time.Duration(math.Ceil((want - level) * float64(time.Minute) / float64(perMin)))
	}
	if charge {
		switch {
		case l.tpm > 0 && tokens > l.tpm:
			v.ok, v.kind, v.tooLarge = false, "tokens", true
		case l.rpm > 0 && l.reqLevel+eps < 1:
			v.ok, v.kind = false, "requests"
			v.wait = need(l.reqLevel, 1, l.rpm)
			v.used = l.rpm - int(math.Floor(l.reqLevel+eps))
		case l.tpm > 0 && l.tokLevel+eps < float64(tokens):
			v.ok, v.kind = false, "tokens"
			v.wait = need(l.tokLevel, float64(tokens), l.tpm)
			v.used = l.tpm - int(math.Floor(l.tokLevel+eps))
		default:
			if l.rpm > 0 {
				l.reqLevel--
			}
			if l.tpm > 0 {
				l.tokLevel -= float64(tokens)
			}
		}
	}
	if l.rpm > 0 {
		v.req = limitState{l.rpm, max(0, int(math.Floor(l.reqLevel+eps))), need(l.reqLevel, float64(l.rpm), l.rpm)}
	}
	if l.tpm > 0 {
		v.tok = limitState{l.tpm, max(0, int(math.Floor(l.tokLevel+eps))), need(l.tokLevel, float64(l.tpm), l.tpm)}
	}
	return v
}

// takeWindow requires l.mu held.
func (l *limiter) takeWindow(now time.Time, tokens int, charge bool) verdict {
	w := int64(0)
	if el := now.Sub(l.start); el > 0 {
		w = int64(el / l.window)
	}
	// A request received in a window already past counts in the current
	// one: the window it came in has been closed.
	if w > l.win {
		l.win, l.winReqs, l.winToks = w, 0, 0
	}
	end := l.start.Add(time.Duration(l.win+1) * l.window).Sub(now)
	v := verdict{ok: true, reqOn: l.rpm > 0, tokOn: l.tpm > 0}
	reqCap, tokCap := l.perWindow(l.rpm), l.perWindow(l.tpm)
	if charge {
		switch {
		case l.tpm > 0 && tokens > tokCap:
			v.ok, v.kind, v.tooLarge = false, "tokens", true
		case l.rpm > 0 && l.winReqs+1 > reqCap:
			v.ok, v.kind, v.wait, v.used = false, "requests", end, l.winReqs
		case l.tpm > 0 && l.winToks+tokens > tokCap:
			v.ok, v.kind, v.wait, v.used = false, "tokens", end, l.winToks
		default:
			l.winReqs++
			l.winToks += tokens
		}
	}
	resetIn := func(used int) time.Duration {
		if used == 0 {
			return 0
		}
		return end
	}
	// Like the real API, the limit headers state the per-minute limit;
	// what remains is what remains of this window.
	if l.rpm > 0 {
		v.req = limitState{l.rpm, max(0, reqCap-l.winReqs), resetIn(l.winReqs)}
	}
	if l.tpm > 0 {
		v.tok = limitState{l.tpm, max(0, tokCap-l.winToks), resetIn(l.winToks)}
	}
	return v
}
