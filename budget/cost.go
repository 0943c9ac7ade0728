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

// PriceTableDate is the day the price table was last checked against
// OpenAI's list prices, for --help and usage output.
const PriceTableDate = "2025-08-07"

// PriceOf finds a model's list price by its exact name: a base name
// (gpt-4o) or one of the dated snapshots the table lists
// (gpt-4o-mini-2024-07-18, gpt-4-0613). Snapshots do not always cost what
// their base model costs (gpt-4o-2024-05-13 is twice gpt-4o), so a dated
// name the table does not list is unknown rather than its base model's
// price, and so is every other name it does not list, such as
// gpt-4o-mini-search-preview or a fine-tuned ft:... model. ok is false for
// an unknown model, whose cost is then unknown, never 0. Embedding models
// have an input price only.
func PriceOf(model string) (p Price, ok bool) {
	// Prices in $0.001 per million tokens: input, cached input (0: as
	// input), output.
	switch model {
	case "gpt-4o-mini", "gpt-4o-mini-2024-07-18":
		return perMillion(150, 75, 600), true
	case "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20":
		return perMillion(2500, 1250, 10000), true
	case "gpt-4o-2024-05-13", "chatgpt-4o-latest":
		return perMillion(5000, 0, 15000), true
	case "gpt-4.1", "gpt-4.1-2025-04-14":
		return perMillion(2000, 500, 8000), true
	case "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14":
		return perMillion(400, 100, 1600), true
	case "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14":
		return perMillion(100, 25, 400), true
	case "o1", "o1-2024-12-17", "o1-preview", "o1-preview-2024-09-12":
		return perMillion(15000, 7500, 60000), true
	case "o1-mini", "o1-mini-2024-09-12":
		return perMillion(1100, 550, 4400), true
	case "o3", "o3-2025-04-16":
		return perMillion(2000, 500, 8000), true
	case "o3-mini", "o3-mini-2025-01-31":
		return perMillion(1100, 550, 4400), true
	case "o4-mini", "o4-mini-2025-04-16":
		return perMillion(1100, 275, 4400), true
	case "gpt-5", "gpt-5-2025-08-07":
		return perMillion(1250, 125, 10000), true
	case "gpt-5-mini", "gpt-5-mini-2025-08-07":
		return perMillion(250, 25, 2000), true
	case "gpt-5-nano", "gpt-5-nano-2025-08-07":
		return perMillion(50, 5, 400), true
	case "gpt-4-turbo", "gpt-4-turbo-2024-04-09", "gpt-4-turbo-preview",
		"gpt-4-0125-preview", "gpt-4-1106-preview", "gpt-4-1106-vision-preview":
		return perMillion(10000, 0, 30000), true
	case "gpt-4", "gpt-4-0613", "gpt-4-0314":
		return perMillion(30000, 0, 60000), true
	case "gpt-4-32k", "gpt-4-32k-0613", "gpt-4-32k-0314":
		return perMillion(60000, 0, 120000), true
	case "gpt-3.5-turbo", "gpt-3.5-turbo-0125":
		return perMillion(500, 0, 1500), true
	case "gpt-3.5-turbo-1106":
		return perMillion(1000, 0, 2000), true
	case "gpt-3.5-turbo-0613", "gpt-3.5-turbo-0301":
		return perMillion(1500, 0, 2000), true
	case "gpt-3.5-turbo-16k-0613":
		return perMillion(3000, 0, 4000), true
	case "text-embedding-3-small":
		return perMillion(20, 0, 0), true
	case "text-embedding-3-large":
		return perMillion(130, 0, 0), true
	case "text-embedding-ada-002":
		return perMillion(100, 0, 0), true
	}
	return Price{}, false
}

// Batch is the price of p through the Batch API: half of every price.
// Every price in the table is a whole number of $0.001 per million tokens,
// 1,000 picodollars a token, so the half is exact.
func (p Price) Batch() Price {
	return Price{Input: p.Input / 2, CachedInput: p.CachedInput / 2, Output: p.Output / 2}
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
