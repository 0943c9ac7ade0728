package budget

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestCostString(t *testing.T) {
	for _, tt := range []struct {
		c    Cost
		want string
	}{
		{0, "0"},
		{7_400_000, "0.0000074"},
		{12*Dollar + Dollar/2, "12.5"},
		{-Dollar / 4, "-0.25"},
		{1, "0.000000000001"},
		{Dollar, "1"},
		{math.MaxInt64, "9223372.036854775807"},
		{math.MinInt64, "-9223372.036854775808"},
	} {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("Cost(%d).String() = %q, want %q", int64(tt.c), got, tt.want)
		}
	}
}

func TestParseCost(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Cost
	}{
		{"5", 5 * Dollar},
		{"0.25", Dollar / 4},
		{"$1.50", 3 * Dollar / 2},
		{" 2 ", 2 * Dollar},
		{"0.0000074", 7_400_000},
		{"1e-3", Dollar / 1000},
		{"1.5E2", 150 * Dollar},
		{".5", Dollar / 2},
		{"5.", 5 * Dollar},
		{"0", 0},
		{"-0", 0},
		{"0e999999999999", 0},
		{"0.0000000000004", 0}, // below half a picodollar
		{"0.0000000000005", 1}, // half: rounds up
		{"0.0000000000015", 2}, //
		{"1e-999999999999", 0}, // exponent out of range, tiny
		{"000000000000000000000000001", Dollar},
		{"9223372.036854775807", math.MaxInt64},
	} {
		got, err := ParseCost(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseCost(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"-1", "negative"},
		{"$-1", "negative"},
		{"abc", "not an amount"},
		{"", "not an amount"},
		{"$", "not an amount"},
		{".", "not an amount"},
		{"1/3", "not an amount"},
		{"0x10", "not an amount"},
		{"1e", "not an amount"},
		{"1e+-3", "not an amount"},
		{"1.2.3", "not an amount"},
		{"Inf", "not an amount"},
		{"NaN", "not an amount"},
		{"1_000", "not an amount"},
		{"9223372.036854775808", "too large"},
		{"1e999999999999", "too large"},
	} {
		if _, err := ParseCost(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseCost(%q) error = %v, want one saying %q", tt.in, err, tt.want)
		}
	}
}

func TestCostJSON(t *testing.T) {
	for _, c := range []Cost{0, 7_400_000, -Dollar / 4, 12*Dollar + 1} {
		b, err := json.Marshal(c)
		if err != nil || string(b) != c.String() {
			t.Errorf("json.Marshal(%s) = %s, %v; want %s", c, b, err, c)
		}
		var back Cost
		if err := json.Unmarshal(b, &back); err != nil || back != c {
			t.Errorf("json.Unmarshal(%s) = %d, %v; want %d", b, back, err, c)
		}
	}
	var e struct{ C *Cost }
	if err := json.Unmarshal([]byte(`{"C":null}`), &e); err != nil || e.C != nil {
		t.Errorf("json.Unmarshal(null) = %v, %v; want nil", e.C, err)
	}
	var c Cost
	if err := json.Unmarshal([]byte(`"0.5"`), &c); err == nil {
		t.Errorf("json.Unmarshal of a string = %s, want an error", c)
	}
}

func TestFloat64(t *testing.T) {
	if got := (Dollar * 3 / 2).Float64(); got != 1.5 {
		t.Errorf("Cost(1.5).Float64() = %v, want 1.5", got)
	}
}

// The price table, as the user reads it: USD per million tokens.
func TestPriceOf(t *testing.T) {
	for _, tt := range []struct {
		model               string
		input, cached, outp string
	}{
		{"gpt-4o-mini", ".15", ".075", ".60"},
		{"gpt-4o", "2.50", "1.25", "10"},
		{"chatgpt-4o-latest", "5", "", "15"},
		{"gpt-4.1", "2", ".50", "8"},
		{"gpt-4.1-mini", ".40", ".10", "1.60"},
		{"gpt-4.1-nano", ".10", ".025", ".40"},
		{"o1", "15", "7.50", "60"},
		{"o1-mini", "1.10", ".55", "4.40"},
		{"o3", "2", ".50", "8"},
		{"o3-mini", "1.10", ".55", "4.40"},
		{"o4-mini", "1.10", ".275", "4.40"},
		{"gpt-5", "1.25", ".125", "10"},
		{"gpt-5-mini", ".25", ".025", "2"},
		{"gpt-5-nano", ".05", ".005", ".40"},
		{"gpt-4-turbo", "10", "", "30"},
		{"gpt-4", "30", "", "60"},
		{"gpt-3.5-turbo", ".50", "", "1.50"},
		// Dated and preview names the table lists.
		{"gpt-4o-mini-2024-07-18", ".15", ".075", ".60"},
		{"gpt-4o-2024-08-06", "2.50", "1.25", "10"},
		{"o3-2025-04-16", "2", ".50", "8"},
		{"gpt-4-0613", "30", "", "60"},
		{"gpt-4-turbo-2024-04-09", "10", "", "30"},
		{"gpt-4-0125-preview", "10", "", "30"},
		{"gpt-3.5-turbo-0125", ".50", "", "1.50"},
		// Snapshots that cost more than their base model.
		{"gpt-4o-2024-05-13", "5", "", "15"},
		{"gpt-3.5-turbo-1106", "1", "", "2"},
		{"gpt-3.5-turbo-0613", "1.50", "", "2"},
		{"gpt-4-32k-0613", "60", "", "120"},
		// Embeddings: input only.
		{"text-embedding-3-small", ".02", "", "0"},
		{"text-embedding-3-large", ".13", "", "0"},
		{"text-embedding-ada-002", ".10", "", "0"},
	} {
		perToken := func(s string) Cost {
			t.Helper()
			c, err := ParseCost(s)
			if err != nil {
				t.Fatal(err)
			}
			return c / 1_000_000
		}
		want := Price{Input: perToken(tt.input), Output: perToken(tt.outp), CachedInput: perToken(tt.input)}
		if tt.cached != "" {
			want.CachedInput = perToken(tt.cached)
		}
		if got, ok := PriceOf(tt.model); !ok || got != want {
			t.Errorf("PriceOf(%q) = %+v, %v; want %+v, true", tt.model, got, ok, want)
		}
	}
	for _, model := range []string{"gpt-4o-mini-search-preview", "gpt-4o-mini-tts", "llama3", "", "ft:gpt-4o-mini:acme::x",
		"gpt-4o-mini-2024-07", "gpt-4o-mini-2024-07-18-x", "GPT-4O-MINI",
		// Dated names the table does not list: a snapshot's price may
		// differ from its base model's, so they are unknown.
		"gpt-4o-2099-01-01", "gpt-4o-mini-2030-12-31", "gpt-3.5-turbo-0999", "gpt-4-1234", "o3-mini-2099-01-31"} {
		if p, ok := PriceOf(model); ok {
			t.Errorf("PriceOf(%q) = %+v, true; want unknown", model, p)
		}
	}
}

func TestPriceCost(t *testing.T) {
	mini, _ := PriceOf("gpt-4o-mini")
	gpt4, _ := PriceOf("gpt-4")
	for _, tt := range []struct {
		name                     string
		p                        Price
		prompt, cached, complete int64
		want                     string
	}{
		{"9 in, 10 out", mini, 9, 0, 10, "0.00000735"},
		{"cached at the cached price", mini, 1000, 500, 100, "0.0001725"},
		{"no cached price: cached bill as input", gpt4, 1000, 500, 0, "0.03"},
		{"cached beyond the prompt counts as the prompt", mini, 10, 50, 0, "0.00000075"},
		{"a billion tokens", mini, 1e9, 0, 1e9, "750"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Cost(tt.prompt, tt.cached, tt.complete); got.String() != tt.want {
				t.Errorf("Cost(%d, %d, %d) = %s, want %s", tt.prompt, tt.cached, tt.complete, got, tt.want)
			}
		})
	}
}

// The Batch API bills half the sync price, exactly.
func TestPriceBatch(t *testing.T) {
	for _, model := range []string{"gpt-4o-mini", "o4-mini", "gpt-5-nano", "gpt-3.5-turbo-0613", "text-embedding-3-small"} {
		p, _ := PriceOf(model)
		b := p.Batch()
		if b.Input*2 != p.Input || b.CachedInput*2 != p.CachedInput || b.Output*2 != p.Output {
			t.Errorf("PriceOf(%q).Batch() = %+v, want exactly half of %+v", model, b, p)
		}
	}
	mini, _ := PriceOf("gpt-4o-mini")
	// 1M in ($0.15), 1M cached ($0.075), 1M out ($0.60), halved.
	if got, want := mini.Batch().Cost(2e6, 1e6, 1e6), "0.4125"; got.String() != want {
		t.Errorf("gpt-4o-mini Batch().Cost(2M, 1M cached, 1M) = %s, want %s", got, want)
	}
}

func TestPriceTableDate(t *testing.T) {
	if _, err := time.Parse(time.DateOnly, PriceTableDate); err != nil {
		t.Errorf("PriceTableDate = %q, want a YYYY-MM-DD date", PriceTableDate)
	}
}
