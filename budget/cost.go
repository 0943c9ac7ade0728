// Package budget keeps gptbatch's limits: the per-minute and per-day
// counters shared through usage.md, the reservations each request makes
// against them, the ledger of calls and the price table.
package budget

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Cost is an amount of US dollars in picodollars (1e-12 USD), exact for
// every price in the table times any token count.
type Cost int64

// Dollar is one US dollar.
const Dollar Cost = 1_000_000_000_000

// String writes c as the shortest exact decimal number of dollars:
// "0.0000074", "0", "12.5", "-0.25".
func (c Cost) String() string {
	u := uint64(c) // the magnitude, also for the most negative Cost
	sign := ""
	if c < 0 {
		u, sign = -u, "-"
	}
	var buf [32]byte
	return string(c.append(buf[:0], u, sign))
}

// AppendJSON appends c as String writes it: a ledger line or a result
// writes one each, so it takes no allocation of its own.
func (c Cost) AppendJSON(b []byte) []byte {
	u := uint64(c)
	if c < 0 {
		return c.append(b, -u, "-")
	}
	return c.append(b, u, "")
}

// append appends the magnitude u with its sign: the dollars, then the
// twelve digits of picodollars without their trailing zeros.
func (Cost) append(b []byte, u uint64, sign string) []byte {
	b = append(b, sign...)
	b = strconv.AppendUint(b, u/uint64(Dollar), 10)
	frac := u % uint64(Dollar)
	if frac == 0 {
		return b
	}
	var digits [12]byte
	for i := len(digits) - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	end := len(digits)
	for digits[end-1] == '0' {
		end--
	}
	b = append(b, '.')
	return append(b, digits[:end]...)
}

// Float64 is c in dollars, for display and arithmetic that need not be
// exact.
func (c Cost) Float64() float64 { return float64(c) / float64(Dollar) }

// MarshalJSON writes c as a JSON number of dollars, exactly.
func (c Cost) MarshalJSON() ([]byte, error) { return c.AppendJSON(nil), nil }

// UnmarshalJSON reads a JSON number of dollars, rounded to the picodollar.
// A JSON null leaves c unchanged.
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

// ParseCost reads a non-negative amount of dollars written in decimal,
// optionally after a "$": "5", "0.25", "$1.50", "1e-3". Digits below a
// picodollar are rounded, half up.
func ParseCost(s string) (Cost, error) {
	return parseDollars(strings.TrimPrefix(strings.TrimSpace(s), "$"), false)
}

// parseDollars reads [sign] digits [. digits] [e [sign] digits] exactly.
// It does its own parsing rather than use big.Rat, whose exponents are
// unbounded: "1e999999999" would take minutes in a corrupt usage.md.
func parseDollars(s string, allowNeg bool) (Cost, error) {
	bad := func() (Cost, error) { return 0, fmt.Errorf("%q is not an amount of dollars", s) }
	rest := s
	neg := false
	if rest != "" && (rest[0] == '+' || rest[0] == '-') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	var digits []byte // the significant digits, without leading zeros
	shift := 12       // the power of ten that turns digits into picodollars
	seenDigit, seenDot := false, false
	i := 0
	for ; i < len(rest); i++ {
		ch := rest[i]
		switch {
		case ch >= '0' && ch <= '9':
			seenDigit = true
			if ch != '0' || len(digits) > 0 {
				digits = append(digits, ch)
			}
			if seenDot {
				shift--
			}
			continue
		case ch == '.' && !seenDot:
			seenDot = true
			continue
		}
		break
	}
	if !seenDigit {
		return bad()
	}
	if i < len(rest) {
		if rest[i] != 'e' && rest[i] != 'E' {
			return bad()
		}
		exp := rest[i+1:]
		expNeg := false
		if exp != "" && (exp[0] == '+' || exp[0] == '-') {
			expNeg = exp[0] == '-'
			exp = exp[1:]
		}
		if !isDigits(exp) {
			return bad()
		}
		e, err := strconv.ParseInt(exp, 10, 32)
		if err != nil {
			e = 1 << 31 // out of range: far too large or far too small
		}
		if expNeg {
			e = -e
		}
		shift += int(e)
	}
	// Trailing zeros only move the decimal point.
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		shift++
	}
	if len(digits) == 0 {
		return 0, nil
	}
	if neg && !allowNeg {
		return 0, fmt.Errorf("%q is negative", s)
	}
	if len(digits)+shift > 19 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if shift < -len(digits)-1 {
		return 0, nil // below half a picodollar
	}
	v, _ := new(big.Int).SetString(string(digits), 10)
	ten := big.NewInt(10)
	if shift >= 0 {
		v.Mul(v, new(big.Int).Exp(ten, big.NewInt(int64(shift)), nil))
	} else {
		div := new(big.Int).Exp(ten, big.NewInt(int64(-shift)), nil)
		var r big.Int
		v.QuoRem(v, div, &r)
		if r.Lsh(&r, 1).Cmp(div) >= 0 {
			v.Add(v, big.NewInt(1))
		}
	}
	if neg {
		v.Neg(v)
	}
	if !v.IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Cost(v.Int64()), nil
}

// Price is what one tier of a model (its list price, the Batch API's,
// flex's or priority's) costs per token, in picodollars: 0.15 USD per
// million tokens is 150_000.
type Price struct{ Input, CachedInput, Output Cost }

// Batch is half of every price of p, rounded up to the picodollar: the
// Batch API's and flex's price where a table gives none of its own.
func (p Price) Batch() Price {
	half := func(c Cost) Cost { return c/2 + c%2 }
	return Price{Input: half(p.Input), CachedInput: half(p.CachedInput), Output: half(p.Output)}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Cost is the price of a call: the uncached prompt tokens at the input
// price, the cached ones at the cached price (the input price for a model
// without one), the completion tokens at the output price.
func (p Price) Cost(promptTokens, cachedTokens, completionTokens int64) Cost {
	cachedTokens = min(max(cachedTokens, 0), promptTokens)
	return Cost(promptTokens-cachedTokens)*p.Input + Cost(cachedTokens)*p.CachedInput + Cost(completionTokens)*p.Output
}
