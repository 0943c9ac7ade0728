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
	frac := u % uint64(Dollar)
	if frac == 0 {
		return sign + strconv.FormatUint(u/uint64(Dollar), 10)
	}
	f := strings.TrimRight(fmt.Sprintf("%012d", frac), "0")
	return sign + strconv.FormatUint(u/uint64(Dollar), 10) + "." + f
}

// Float64 is c in dollars, for display and arithmetic that need not be
// exact.
func (c Cost) Float64() float64 { return float64(c) / float64(Dollar) }

// MarshalJSON writes c as a JSON number of dollars, exactly.
func (c Cost) MarshalJSON() ([]byte, error) { return []byte(c.String()), nil }

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

// Price is what a model costs per token, in picodollars: 0.15 USD per
// million tokens is 150_000.
type Price struct{ Input, CachedInput, Output Cost }

// perMillion makes a Price from prices in thousandths of a dollar per
// million tokens; a cached price of 0 means cached tokens bill as input.
func perMillion(input, cached, output int64) Price {
	const milli = Dollar / 1000 / 1_000_000 // $0.001 per million tokens, per token
	if cached == 0 {
		cached = input
	}
	return Price{Input: Cost(input) * milli, CachedInput: Cost(cached) * milli, Output: Cost(output) * milli}
}

// listPrice is OpenAI's list price of a base model name (input, cached
// input, output, in $0.001 per million tokens).
func listPrice(model string) (Price, bool) {
	switch model {
	case "gpt-4o-mini":
		return perMillion(150, 75, 600), true
	case "gpt-4o":
		return perMillion(2500, 1250, 10000), true
	case "chatgpt-4o-latest":
		return perMillion(5000, 0, 15000), true
	case "gpt-4.1":
		return perMillion(2000, 500, 8000), true
	case "gpt-4.1-mini":
		return perMillion(400, 100, 1600), true
	case "gpt-4.1-nano":
		return perMillion(100, 25, 400), true
	case "o1":
		return perMillion(15000, 7500, 60000), true
	case "o1-mini":
		return perMillion(1100, 550, 4400), true
	case "o3":
		return perMillion(2000, 500, 8000), true
	case "o3-mini":
		return perMillion(1100, 550, 4400), true
	case "o4-mini":
		return perMillion(1100, 275, 4400), true
	case "gpt-5":
		return perMillion(1250, 125, 10000), true
	case "gpt-5-mini":
		return perMillion(250, 25, 2000), true
	case "gpt-5-nano":
		return perMillion(50, 5, 400), true
	case "gpt-4-turbo", "gpt-4-turbo-preview", "gpt-4-0125-preview", "gpt-4-1106-preview":
		return perMillion(10000, 0, 30000), true
	case "gpt-4":
		return perMillion(30000, 0, 60000), true
	case "gpt-3.5-turbo":
		return perMillion(500, 0, 1500), true
	}
	return Price{}, false
}

// PriceOf finds a model's price. A dated name maps to its base model:
// gpt-4o-mini-2024-07-18 and o3-2025-04-16 by their -YYYY-MM-DD,
// gpt-4-0613 and gpt-3.5-turbo-0125 by their -MMDD; the GPT-4 Turbo
// previews (gpt-4-0125-preview, gpt-4-1106-preview, gpt-4-turbo-preview)
// are gpt-4-turbo. Otherwise the name must match exactly, so
// gpt-4o-mini-search-preview is unknown. ok is false for an unknown model,
// whose cost is then unknown, never 0.
func PriceOf(model string) (p Price, ok bool) {
	if p, ok := listPrice(model); ok {
		return p, true
	}
	base := model
	if n := len(base); n > 11 && base[n-11] == '-' && isDate(base[n-10:]) {
		base = base[:n-11]
	} else if n > 5 && base[n-5] == '-' && isDigits(base[n-4:]) {
		base = base[:n-5]
	}
	return listPrice(base)
}

func isDate(s string) bool {
	return len(s) == 10 && s[4] == '-' && s[7] == '-' && isDigits(s[:4]) && isDigits(s[5:7]) && isDigits(s[8:])
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
