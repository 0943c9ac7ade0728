package jsonenc

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// picoPerDollar is the picodollars (1e-12 USD) in a dollar: the unit of
// every amount gptbatch counts (budget.Cost, a result's cost_usd).
const picoPerDollar = 1_000_000_000_000

// AppendDollars appends pico picodollars as the shortest exact decimal
// number of dollars: "0.0000074", "0", "12.5", "-0.25". It allocates
// nothing beyond b's growth: results and ledger lines each carry one.
func AppendDollars(b []byte, pico int64) []byte {
	u := uint64(pico) // the magnitude, also for the most negative amount
	if pico < 0 {
		b, u = append(b, '-'), -u
	}
	b = strconv.AppendUint(b, u/picoPerDollar, 10)
	if frac := u % picoPerDollar; frac != 0 {
		// The picodollars are picoPerDollar+frac's digits, the 1 made the point.
		i := len(b)
		b = strconv.AppendUint(b, picoPerDollar+frac, 10)
		b[i] = '.'
		b = bytes.TrimRight(b, "0")
	}
	return b
}

// ParseDollars reads [sign] digits [. digits] [e [sign] digits] dollars
// exactly, in picodollars, rounding half up below the picodollar; a
// negative amount is an error unless allowNeg. Not big.Rat, whose
// exponents are unbounded: "1e999999999" in a corrupt file would take
// minutes. It reads what AppendDollars writes, and more.
func ParseDollars(s string, allowNeg bool) (int64, error) {
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
	return int64(u), nil
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
