// Package budget keeps gptbatch's shared limits, the reservations made
// against them, the ledger of calls and the price table.
package budget

import (
	"strings"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
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

// AppendJSON appends c as String writes it, allocating nothing: by
// jsonenc.AppendDollars, which also writes a result's cost_usd.
func (c Cost) AppendJSON(b []byte) []byte { return jsonenc.AppendDollars(b, int64(c)) }

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

// parseDollars reads an amount of dollars exactly (jsonenc.ParseDollars,
// which also reads a result's cost_usd back).
func parseDollars(s string, allowNeg bool) (Cost, error) {
	c, err := jsonenc.ParseDollars(s, allowNeg)
	return Cost(c), err
}

// isDigits reports whether s is one or more decimal digits.
func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
