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

// String writes c as exact decimal dollars: "0.0000074", "0", "12.5".
func (c Cost) String() string {
	neg := c < 0
	if neg {
		c = -c
	}
	s := fmt.Sprintf("%d.%012d", c/Dollar, c%Dollar)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if neg {
		s = "-" + s
	}
	return s
}

// Float64 is c in dollars, for display.
func (c Cost) Float64() float64 { return float64(c) / float64(Dollar) }

// MarshalJSON writes c as a decimal number of dollars.
func (c Cost) MarshalJSON() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalJSON reads a number of dollars.
func (c *Cost) UnmarshalJSON(b []byte) error {
	v, err := parseDollars(string(b), true)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// ParseCost reads an amount of dollars such as "5", "0.25" or "$1.50".
// Negative amounts are an error; digits below a picodollar are dropped.
func ParseCost(s string) (Cost, error) {
	return parseDollars(strings.TrimPrefix(strings.TrimSpace(s), "$"), false)
}

func parseDollars(s string, allowNeg bool) (Cost, error) {
	r, ok := new(big.Rat).SetString(s)
	if !ok || strings.ContainsAny(s, "/") {
		return 0, fmt.Errorf("%q is not an amount of dollars", s)
	}
	if r.Sign() < 0 && !allowNeg {
		return 0, fmt.Errorf("%q is negative", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(int64(Dollar)))
	q := new(big.Int).Quo(r.Num(), r.Denom())
	if !q.IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Cost(q.Int64()), nil
}

// Price is what a model costs per token, in picodollars: 0.15 USD per
// million tokens is 150_000.
type Price struct{ Input, CachedInput, Output Cost }

// perMillion converts a price in dollars per million tokens (as a decimal
// string, to stay exact) to picodollars per token.
func perMillion(s string) Cost {
	if s == "" {
		return 0
	}
	c, err := ParseCost(s)
	if err != nil {
		panic(err) // the table below is constant
	}
	return c / 1_000_000
}

// prices are OpenAI's list prices: input, cached input, output, in dollars
// per million tokens. Models without a cached price bill cached tokens as
// input.
var prices = func() map[string]Price {
	table := map[string][3]string{
		"gpt-4o-mini":       {"0.15", "0.075", "0.60"},
		"gpt-4o":            {"2.50", "1.25", "10"},
		"chatgpt-4o-latest": {"5", "", "15"},
		"gpt-4.1":           {"2", "0.50", "8"},
		"gpt-4.1-mini":      {"0.40", "0.10", "1.60"},
		"gpt-4.1-nano":      {"0.10", "0.025", "0.40"},
		"o1":                {"15", "7.50", "60"},
		"o1-mini":           {"1.10", "0.55", "4.40"},
		"o3":                {"2", "0.50", "8"},
		"o3-mini":           {"1.10", "0.55", "4.40"},
		"o4-mini":           {"1.10", "0.275", "4.40"},
		"gpt-5":             {"1.25", "0.125", "10"},
		"gpt-5-mini":        {"0.25", "0.025", "2"},
		"gpt-5-nano":        {"0.05", "0.005", "0.40"},
		"gpt-4-turbo":       {"10", "", "30"},
		"gpt-4":             {"30", "", "60"},
		"gpt-3.5-turbo":     {"0.50", "", "1.50"},
	}
	m := make(map[string]Price, len(table))
	for k, v := range table {
		p := Price{Input: perMillion(v[0]), CachedInput: perMillion(v[1]), Output: perMillion(v[2])}
		if p.CachedInput == 0 {
			p.CachedInput = p.Input
		}
		m[k] = p
	}
	return m
}()

// PriceOf finds a model's price. Dated names (gpt-4o-mini-2024-07-18,
// gpt-4-0613, gpt-3.5-turbo-0125) map to their base model; anything else
// must match exactly. ok is false for a model with no known price, whose
// cost is then unknown, never 0.
func PriceOf(model string) (p Price, ok bool) {
	if p, ok := prices[model]; ok {
		return p, true
	}
	base := model
	// -YYYY-MM-DD
	if n := len(base); n > 11 && base[n-11] == '-' && isDate(base[n-10:]) {
		base = base[:n-11]
	} else if i := strings.LastIndexByte(base, '-'); i > 0 && len(base)-i-1 == 4 && isDigits(base[i+1:]) {
		// -MMDD, as in gpt-4-0613 and gpt-3.5-turbo-0125
		base = base[:i]
	}
	p, ok = prices[base]
	return p, ok
}

func isDate(s string) bool {
	return len(s) == 10 && s[4] == '-' && s[7] == '-' && isDigits(s[:4]) && isDigits(s[5:7]) && isDigits(s[8:])
}

func isDigits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil && !strings.ContainsAny(s, "+-")
}

// Cost is the price of a call: uncached prompt tokens at the input price,
// cached ones at the cached price, completion tokens at the output price.
func (p Price) Cost(promptTokens, cachedTokens, completionTokens int64) Cost {
	cachedTokens = min(max(cachedTokens, 0), promptTokens)
	return Cost(promptTokens-cachedTokens)*p.Input + Cost(cachedTokens)*p.CachedInput + Cost(completionTokens)*p.Output
}
