package budget

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

// liteLLMFile is LiteLLM's model_prices_and_context_window.json as it was
// on 2026-07-24 (MIT licensed, github.com/BerriAI/litellm), kept gzipped.
const liteLLMFile = "testdata/litellm_model_prices_2026-07-24.json.gz"

func readLiteLLM(t testing.TB) []byte {
	t.Helper()
	b, err := gunzipFile(liteLLMFile)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gunzipFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(z)
}

// liteLLMPrices is LiteLLM's file parsed as a price file given to a run,
// once for the tests that read it so: parsing it is most of their time.
// Prices is safe for concurrent use and never changes.
var liteLLMPrices = sync.OnceValues(func() (*Prices, error) {
	b, err := gunzipFile(liteLLMFile)
	if err != nil {
		return nil, err
	}
	return ParsePrices(b, SourceFile)
})

// perM is a price in dollars per million tokens, as OpenAI lists them,
// per token.
func perM(t testing.TB, s string) Cost {
	t.Helper()
	c, err := ParseCost(s)
	if err != nil {
		t.Fatal(err)
	}
	return c / 1_000_000
}

func mustLookup(t testing.TB, p *Prices, model string) *ModelPrice {
	t.Helper()
	m, ok := p.Lookup(model)
	if !ok {
		t.Fatalf("Lookup(%q): not in the table", model)
	}
	return m
}

// LiteLLM's whole file loads as it is, its OpenAI models priced to the
// picodollar from their decimal text, on every tier.
func TestParsePricesLiteLLMFile(t *testing.T) {
	p, err := liteLLMPrices()
	if err != nil {
		t.Fatalf("ParsePrices(LiteLLM's file) = %v", err)
	}
	if n := p.Len(); n < 100 {
		t.Errorf("ParsePrices(LiteLLM's file) prices %d models, want OpenAI's 100 and more", n)
	}
	for _, model := range []string{"claude-3-5-sonnet-20241022", "gemini-2.5-pro", "azure/gpt-4o", "sample_spec", "dall-e-3", "tts-1"} {
		if _, ok := p.Lookup(model); ok {
			t.Errorf("Lookup(%q) found a price: want other providers' and untokened models left out", model)
		}
	}
	m := mustLookup(t, p, "gpt-5.4")
	short, long := int64(1000), int64(272_001)
	for _, tt := range []struct {
		name        string
		tier        Tier
		prompt      int64
		in, cac, ou string
	}{
		{"standard", TierStandard, short, "2.50", "0.25", "15"},
		{"batch, as the file gives it", TierBatch, short, "1.25", "0.125", "7.50"},
		{"flex, the file's own cached price", TierFlex, short, "1.25", "0.13", "7.50"},
		{"priority", TierPriority, short, "5", "0.50", "30"},
		{"above 272k tokens", TierStandard, long, "5", "0.50", "22.50"},
		{"batch above 272k: half the long price", TierBatch, long, "2.50", "0.25", "11.25"},
		{"priority above 272k: served as standard", TierPriority, long, "5", "0.50", "22.50"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := Price{Input: perM(t, tt.in), CachedInput: perM(t, tt.cac), Output: perM(t, tt.ou)}
			if got, ok := m.Rates(tt.tier, tt.prompt); !ok || got != want {
				t.Errorf("gpt-5.4 Rates(%d, %d) = %+v, %v; want %+v", tt.tier, tt.prompt, got, ok, want)
			}
		})
	}
	// A price with more digits than a float64 prints reads exactly.
	if got, want := mustLookup(t, p, "gpt-4o-2024-08-06").tiers.tier[TierStandard].Input, Cost(2_500_000); got != want {
		t.Errorf("gpt-4o-2024-08-06 input = %d picodollars, want %d", got, want)
	}
}

func TestParsePrices(t *testing.T) {
	const file = `{
	  "my-model": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.234567e-6,
	    "output_cost_per_token": 0.000002, "some_new_field": {"x": [1]}, "max_tokens": "lots"},
	  "own-model": {"input_cost_per_token": 3e-7, "output_cost_per_token": 1.2e-6, "cache_read_input_token_cost": 3e-8,
	    "input_cost_per_token_priority": 6e-7, "output_cost_per_token_priority": 2.4e-6,
	    "input_cost_per_token_flex": 1e-7},
	  "half-priority": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "input_cost_per_token_priority": 2e-6},
	  "odd": {"input_cost_per_token": 1e-12, "output_cost_per_token": 3e-12},
	  "openai/prefixed": {"litellm_provider": "openai", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
	  "openai/both": {"litellm_provider": "openai", "input_cost_per_token": 9e-6, "output_cost_per_token": 9e-6},
	  "both": {"litellm_provider": "openai", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
	  "other/model": {"litellm_provider": "anthropic", "input_cost_per_token": "free", "output_cost_per_token": -1},
	  "an-image-model": {"litellm_provider": "openai", "output_cost_per_image": 0.04},
	  "last_updated": "2026-07-24"
	}`
	p, err := ParsePrices([]byte(file), SourceFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Models(), []string{"both", "half-priority", "my-model", "odd", "own-model", "prefixed"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Models() = %v, want %v", got, want)
	}
	for _, tt := range []struct {
		name, model string
		tier        Tier
		want        Price
		ok          bool
	}{
		{"decimal text read exactly", "my-model", TierStandard, Price{1_234_567, 1_234_567, 2_000_000}, true},
		{"no cached price: cached bills as input", "my-model", TierStandard, Price{1_234_567, 1_234_567, 2_000_000}, true},
		{"batch defaults to half", "my-model", TierBatch, Price{617_284, 617_284, 1_000_000}, true},
		{"no priority price: unknown", "my-model", TierPriority, Price{}, false},
		{"cached price", "own-model", TierStandard, Price{300_000, 30_000, 1_200_000}, true},
		{"flex: given input, half the rest", "own-model", TierFlex, Price{100_000, 15_000, 600_000}, true},
		{"priority, cached as its input", "own-model", TierPriority, Price{600_000, 600_000, 2_400_000}, true},
		{"priority input without output: unknown", "half-priority", TierPriority, Price{}, false},
		{"half of an odd picodollar rounds up", "odd", TierBatch, Price{1, 1, 2}, true},
		{"openai/NAME prices NAME", "prefixed", TierStandard, Price{1_000_000, 1_000_000, 1_000_000}, true},
		{"NAME beats openai/NAME", "both", TierStandard, Price{1_000_000, 1_000_000, 1_000_000}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := mustLookup(t, p, tt.model).Rates(tt.tier, 10)
			if got != tt.want || ok != tt.ok {
				t.Errorf("%s Rates(%d) = %+v, %v; want %+v, %v", tt.model, tt.tier, got, ok, tt.want, tt.ok)
			}
		})
	}
	if m := mustLookup(t, p, "my-model"); m.Source != SourceFile {
		t.Errorf("Source = %q, want %q", m.Source, SourceFile)
	}
}

// A price file that is not JSON, or gives an OpenAI model a negative or
// non-numeric price, is an error naming the model and the field.
func TestParsePricesBad(t *testing.T) {
	for _, tt := range []struct {
		name, file, want string
	}{
		{"not JSON", `{"gpt-x": {`, "not a price table"},
		{"not an object", `[1, 2]`, "not a price table"},
		{"two values", `{} {}`, "more than one"},
		{"negative", `{"gpt-x": {"litellm_provider": "openai", "input_cost_per_token": -1e-6}}`, `model "gpt-x": input_cost_per_token: "-1e-6" is negative`},
		{"a string", `{"gpt-x": {"output_cost_per_token": "0.000001"}}`, `model "gpt-x": output_cost_per_token: "0.000001" is not a number`},
		{"null", `{"gpt-x": {"input_cost_per_token": 1e-6, "cache_read_input_token_cost_priority": null}}`, `model "gpt-x": cache_read_input_token_cost_priority: null is not a number`},
		{"a long-context price", `{"gpt-x": {"input_cost_per_token": 1e-6, "output_cost_per_token_above_272k_tokens": true}}`, `output_cost_per_token_above_272k_tokens: true is not a number`},
		{"too large", `{"gpt-x": {"input_cost_per_token": 1e30}}`, `input_cost_per_token: "1e30" is too large`},
		{"past $0.01 a token", `{"gpt-x": {"input_cost_per_token": 0.02}}`, `input_cost_per_token: 0.02 is more than $0.01 a token`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePrices([]byte(tt.file), SourceFile)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParsePrices(%s) = %v, want an error saying %q", tt.file, err, tt.want)
			}
			var pe *PriceError
			if strings.Contains(tt.want, "model") && !errors.As(err, &pe) {
				t.Errorf("ParsePrices(%s) = %T, want a *PriceError", tt.file, err)
			}
		})
	}
}

// A long-context price applies to the whole call once the prompt is past
// the threshold, not before.
func TestRatesLongContext(t *testing.T) {
	p, err := ParsePrices([]byte(`{"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
	  "input_cost_per_token_above_272k_tokens": 2e-6, "output_cost_per_token_above_272k_tokens": 3e-6,
	  "input_cost_per_token_above_1000k_tokens": 4e-6,
	  "input_cost_per_token_priority": 5e-6, "output_cost_per_token_priority": 6e-6}}`), SourceFile)
	if err != nil {
		t.Fatal(err)
	}
	m := mustLookup(t, p, "m")
	for _, tt := range []struct {
		prompt  int64
		tier    Tier
		in, out Cost
	}{
		{272_000, TierStandard, 1_000_000, 2_000_000},
		{272_001, TierStandard, 2_000_000, 3_000_000},
		{272_001, TierBatch, 1_000_000, 1_500_000},
		{1_000_001, TierStandard, 4_000_000, 2_000_000}, // the next threshold's input, the base output
		{272_000, TierPriority, 5_000_000, 6_000_000},
		{272_001, TierPriority, 2_000_000, 3_000_000},
	} {
		got, ok := m.Rates(tt.tier, tt.prompt)
		if !ok || got.Input != tt.in || got.Output != tt.out {
			t.Errorf("Rates(%d, %d) = %+v, %v; want input %d, output %d", tt.tier, tt.prompt, got, ok, tt.in, tt.out)
		}
	}
	if got := m.Thresholds(); len(got) != 2 || got[0] != 272_000 || got[1] != 1_000_000 {
		t.Errorf("Thresholds() = %v, want [272000 1000000]", got)
	}
}

// A table written with Format reads back as the same table.
func TestPricesFormatRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    *Prices
	}{
		{"built-in", BuiltinPrices()},
		{"LiteLLM's file", func() *Prices {
			p, err := liteLLMPrices()
			if err != nil {
				t.Fatal(err)
			}
			return p
		}()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			back, err := ParsePrices(tt.p.Format(), SourceStored)
			if err != nil {
				t.Fatalf("ParsePrices(Format()) = %v", err)
			}
			if back.Len() != tt.p.Len() {
				t.Fatalf("read back %d models, want %d", back.Len(), tt.p.Len())
			}
			for _, name := range tt.p.Models() {
				a, b := mustLookup(t, tt.p, name), mustLookup(t, back, name)
				b.Source = a.Source
				if !equalModelPrice(a, b) {
					t.Errorf("%s read back as %+v, want %+v", name, b, a)
				}
			}
		})
	}
}

func equalModelPrice(a, b *ModelPrice) bool {
	if a.tiers != b.tiers || a.Source != b.Source || len(a.long) != len(b.long) {
		return false
	}
	for i := range a.long {
		if a.long[i] != b.long[i] {
			return false
		}
	}
	return true
}

// An answer naming a snapshot the table lacks is priced as the model
// asked for; one the table lists keeps its own price.
func TestForAnswer(t *testing.T) {
	p := BuiltinPrices()
	gpt4o := mustLookup(t, p, "gpt-4o")
	for _, tt := range []struct {
		answered string
		want     *ModelPrice
	}{
		{"", gpt4o},
		{"gpt-4o-2099-01-01", gpt4o},
		{"gpt-4o-2024-05-13", mustLookup(t, p, "gpt-4o-2024-05-13")},
		{"gpt-4o-2024-08-06", mustLookup(t, p, "gpt-4o-2024-08-06")},
	} {
		if got := p.ForAnswer(gpt4o, tt.answered); got != tt.want {
			t.Errorf("ForAnswer(gpt-4o, %q) = %+v, want %+v", tt.answered, got, tt.want)
		}
	}
}

// Prices laid over a table replace its models' prices whole and add the
// models it lacks.
func TestPricesOver(t *testing.T) {
	top, err := ParsePrices([]byte(`{"gpt-4o": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}, "new-model": {"input_cost_per_token": 2e-6}}`), SourceStored)
	if err != nil {
		t.Fatal(err)
	}
	p := (*Prices)(nil).Over(top)
	if m := mustLookup(t, p, "gpt-4o"); m.Source != SourceStored || m.tiers.priority {
		t.Errorf("gpt-4o over the built-in table = %+v, want the stored price alone", m)
	}
	if m := mustLookup(t, p, "gpt-4o-mini"); m.Source != SourceBuiltin {
		t.Errorf("gpt-4o-mini = %+v, want the built-in price", m)
	}
	mustLookup(t, p, "new-model")
	if _, ok := BuiltinPrices().Lookup("new-model"); ok {
		t.Error("Over changed the table under it")
	}
}

// The built-in table is LiteLLM's list where its entry says so, price for
// price, on every tier; the other entries say where theirs come from.
func TestBuiltinPricesAgreeWithLiteLLM(t *testing.T) {
	lite, err := ParsePrices(readLiteLLM(t), SourceBuiltin)
	if err != nil {
		t.Fatal(err)
	}
	var sources map[string]struct {
		Source string `json:"source"`
	}
	if err := json.Unmarshal(builtinJSON, &sources); err != nil {
		t.Fatal(err)
	}
	const fromLiteLLM = "LiteLLM model_prices_and_context_window.json of 2026-07-24"
	n := 0
	for _, name := range BuiltinPrices().Models() {
		src := sources[name].Source
		switch {
		case src == "":
			t.Errorf("built-in %s says nowhere where its price comes from", name)
		case src == fromLiteLLM:
			n++
			if l, ok := lite.Lookup(name); !ok || !equalModelPrice(mustLookup(t, BuiltinPrices(), name), l) {
				t.Errorf("built-in %s differs from LiteLLM's (%+v), and its source does not say why", name, l)
			}
		}
	}
	if n < 60 {
		t.Errorf("%d built-in prices are LiteLLM's as they are, want most", n)
	}
}

// gpt-5.4 and its family are priced by the built-in table, tiers and long
// context included: OpenAI's list (dollars per million tokens).
func TestBuiltinPricesCurrentModels(t *testing.T) {
	for _, tt := range []struct {
		model       string
		tier        Tier
		prompt      int64
		in, cac, ou string
	}{
		{"gpt-5.4", TierStandard, 1000, "2.50", "0.25", "15"},
		{"gpt-5.4", TierBatch, 1000, "1.25", "0.125", "7.50"},
		{"gpt-5.4", TierFlex, 1000, "1.25", "0.125", "7.50"},
		{"gpt-5.4", TierPriority, 1000, "5", "0.50", "30"},
		{"gpt-5.4", TierStandard, 300_000, "5", "0.50", "22.50"},
		{"gpt-5.4-2026-03-05", TierStandard, 1000, "2.50", "0.25", "15"},
		{"gpt-5.4-mini", TierPriority, 1000, "1.50", "0.15", "9"},
		{"gpt-5.4-nano", TierStandard, 1000, "0.20", "0.02", "1.25"},
		{"gpt-5.5", TierPriority, 1000, "12.50", "1.25", "75"},
		{"gpt-5.2", TierPriority, 1000, "3.50", "0.35", "28"},
		{"gpt-4o-2024-08-06", TierPriority, 1000, "4.25", "2.125", "17"},
		{"gpt-5.6-luna", TierStandard, 1000, "0.20", "0.02", "1.20"},
		{"gpt-5.6-terra", TierStandard, 300_000, "4", "0.40", "18"},
		{"text-embedding-3-small", TierBatch, 1000, "0.01", "0.01", "0"},
	} {
		want := Price{Input: perM(t, tt.in), CachedInput: perM(t, tt.cac), Output: perM(t, tt.ou)}
		if got, ok := mustLookup(t, nil, tt.model).Rates(tt.tier, tt.prompt); !ok || got != want {
			t.Errorf("%s Rates(%d, %d) = %+v, %v; want %+v", tt.model, tt.tier, tt.prompt, got, ok, want)
		}
	}
	for _, model := range []string{"gpt-5-nano", "gpt-5.4-nano", "gpt-5.6-terra"} {
		if _, ok := mustLookup(t, nil, model).Rates(TierPriority, 1000); ok {
			t.Errorf("%s has a priority price; OpenAI lists none", model)
		}
	}
}

// BenchmarkPriceResult is what pricing one result costs: the line's
// model looked up when it is prepared, then the answer's dated snapshot
// looked up (ForAnswer), its tier's rates and the cost.
func BenchmarkPriceResult(b *testing.B) {
	p := BuiltinPrices()
	for _, tt := range []struct{ name, asked, answered string }{
		{"listed snapshot", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"},
		{"unlisted snapshot", "gpt-5.4", "gpt-5.4-2026-12-01"},
		{"long model name", "gpt-5.4-mini", "gpt-5.4-mini-2026-03-17"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var sum Cost
			for b.Loop() {
				m, _ := p.Lookup(tt.asked)
				c, _ := p.ForAnswer(m, tt.answered).Cost(TierStandard, 1200, 300, 250)
				sum += c
			}
			if sum == 0 {
				b.Fatal("priced nothing")
			}
		})
	}
}
