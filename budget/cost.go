// Package budget keeps gptbatch's shared limits, the reservations made
// against them, the ledger of calls and the price table.
package budget

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Cost is an amount of US dollars in picodollars (1e-12 USD), exact.
type Cost int64

// Dollar is one US dollar.
const Dollar Cost = 1_000_000_000_000

// String writes c as the shortest exact decimal number of dollars:
// "0.0000074", "0", "12.5", "-0.25".
func (c Cost) String() string {
	var buf [32]byte
	return string(c.AppendJSON(buf[:0]))
}

// AppendJSON appends c as String writes it, allocating nothing.
func (c Cost) AppendJSON(b []byte) []byte {
	u := uint64(c) // the magnitude, also for the most negative Cost
	if c < 0 {
		b, u = append(b, '-'), -u
	}
	b = strconv.AppendUint(b, u/uint64(Dollar), 10)
	if frac := u % uint64(Dollar); frac != 0 {
		// The picodollars are Dollar+frac's digits, the 1 made the point.
		i := len(b)
		b = strconv.AppendUint(b, uint64(Dollar)+frac, 10)
		b[i] = '.'
		b = bytes.TrimRight(b, "0")
	}
	return b
}

// Float64 is c in dollars, for what need not be exact.
func (c Cost) Float64() float64 { return float64(c) / float64(Dollar) }

// MarshalJSON writes c as a JSON number of dollars, exactly.
func (c Cost) MarshalJSON() ([]byte, error) { return c.AppendJSON(nil), nil }

// UnmarshalJSON reads a JSON number of dollars; null leaves c unchanged.
func (c *Cost) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	v, err := parseDollars(s, true)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// ParseCost reads a non-negative amount of dollars, optionally after a
// "$": "5", "0.25", "$1.50", "1e-3", rounded half up to the picodollar.
func ParseCost(s string) (Cost, error) {
	return parseDollars(strings.TrimPrefix(strings.TrimSpace(s), "$"), false)
}

// parseDollars reads [sign] digits [. digits] [e [sign] digits] exactly,
// rounding half up below the picodollar. Not big.Rat, whose exponents are
// unbounded: "1e999999999" in a corrupt usage.md would take minutes.
func parseDollars(s string, allowNeg bool) (Cost, error) {
	bad := func() error { return fmt.Errorf("%q is not an amount of dollars", s) }
	rest, neg := cutSign(s)
	var exp int64
	if i := strings.IndexAny(rest, "eE"); i >= 0 {
		if e, _ := cutSign(rest[i+1:]); !isDigits(e) {
			return 0, bad()
		}
		// Out of range, the nearest int32 is far off either way.
		exp, _ = strconv.ParseInt(rest[i+1:], 10, 32)
		rest = rest[:i]
	}
	whole, frac, _ := strings.Cut(rest, ".")
	digits := whole + frac
	if !isDigits(digits) {
		return 0, bad()
	}
	digits = strings.TrimLeft(digits, "0")
	sig := strings.TrimRight(digits, "0") // trailing zeros only move the point
	shift := 12 - len(frac) + int(exp) + len(digits) - len(sig)
	n := len(sig) + shift // the digits of whole picodollars
	round := false
	switch {
	case sig == "":
		return 0, nil
	case neg && !allowNeg:
		return 0, fmt.Errorf("%q is negative", s)
	case n > 19:
		return 0, fmt.Errorf("%q is too large", s)
	case n < 0:
		return 0, nil // below a tenth of a picodollar
	case shift >= 0:
		sig += strings.Repeat("0", shift)
	default:
		sig, round = sig[:n], sig[n] >= '5'
	}
	u, _ := strconv.ParseUint("0"+sig, 10, 64)
	if round {
		u++
	}
	if u > 1<<63 || u == 1<<63 && !neg {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if neg {
		u = -u
	}
	return Cost(u), nil
}

// cutSign cuts a leading + or - off s and says whether it was a -.
func cutSign(s string) (string, bool) {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		return s[1:], s[0] == '-'
	}
	return s, false
}

// isDigits reports whether s is one or more decimal digits.
func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
