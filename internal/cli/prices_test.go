package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/redistest"
)

// acmeFile prices acme-1, a model the built-in table lacks, in LiteLLM's
// format, among entries gptbatch ignores: its batch and flex prices are
// its own, not half its list price.
const acmeFile = `{
  "sample_spec": {"litellm_provider": "one of https://docs.litellm.ai/docs/providers", "input_cost_per_token": 0.0},
  "acme-1": {
    "litellm_provider": "openai", "mode": "chat", "max_input_tokens": 400000, "supports_vision": true,
    "input_cost_per_token": 1.1e-06, "cache_read_input_token_cost": 2.2e-07, "output_cost_per_token": 4.4e-06,
    "input_cost_per_token_batches": 3.3e-07, "output_cost_per_token_batches": 1.1e-06,
    "input_cost_per_token_flex": 5e-07, "output_cost_per_token_flex": 2e-06,
    "some_field_gptbatch_never_heard_of": [1, "two"]
  },
  "anthropic/acme-1": {"litellm_provider": "anthropic", "input_cost_per_token": "not read"},
  "last_updated": "2026-07-24"
}`

// acmePrice is acme-1's per-token prices on tier, as acmeFile gives them.
func acmePrice(tier budget.Tier) budget.Price {
	switch tier {
	case budget.TierBatch:
		return budget.Price{Input: 330_000, CachedInput: 110_000, Output: 1_100_000} // cached: half the list's
	case budget.TierFlex:
		return budget.Price{Input: 500_000, CachedInput: 110_000, Output: 2_000_000}
	}
	return budget.Price{Input: 1_100_000, CachedInput: 220_000, Output: 4_400_000}
}

// acmePrompts are n lines for acme-1.
func acmePrompts(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(`{"id":"a` + strconv.Itoa(i) + `","model":"acme-1","prompt":"say ` + strconv.Itoa(i) + `"}` + "\n")
	}
	return b.String()
}

// checkCosts checks that every result succeeded and costs exactly its
// usage at price, and returns their sum.
func checkCosts(t *testing.T, rs []result, n int, price budget.Price) budget.Cost {
	t.Helper()
	if len(rs) != n {
		t.Fatalf("%d results, want %d", len(rs), n)
	}
	var sum budget.Cost
	for _, r := range rs {
		if r.Error != nil || r.Usage == nil {
			t.Errorf("result %s: error %+v, want an answer", r.ID, r.Error)
			continue
		}
		u := r.Usage
		want := price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
		if string(r.CostUSD) != want.String() {
			t.Errorf("result %s: cost_usd = %s, want %s (%d prompt, %d cached, %d completion tokens at %+v)", r.ID, r.CostUSD, want, u.PromptTokens, u.CachedTokens, u.CompletionTokens, price)
		}
		sum += want
	}
	return sum
}

// A model the built-in table lacks, priced in a LiteLLM-format file, gets
// its exact cost_usd synchronously, through the Batch API (at its
// _batches prices) and on flex (at its _flex ones), and counts against
// --daily-cost instead of being refused.
func TestPriceFile(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		args []string
		tier budget.Tier
	}{
		{"sync", nil, budget.TierStandard},
		{"via batch", []string{"--via", "batch"}, budget.TierBatch},
		{"flex", []string{"--service-tier", "flex"}, budget.TierFlex},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newStepClock()
			srv := openaitest.New(openaitest.Config{Now: clk.Now, Key: testKey})
			defer srv.Close()
			g := newGB(t, srv.URL())
			g.seams.Clock = clk
			file := writeFile(t, g.dir, "prices.json", acmeFile)
			args := append([]string{"--prices", file, "--daily-cost", "5"}, tt.args...)
			out, stderr, code := g.run(context.Background(), acmePrompts(20), args...)
			if code != 0 {
				t.Fatalf("exit status %d, want 0: %s", code, stderr)
			}
			sum := checkCosts(t, parseResults(t, out), 20, acmePrice(tt.tier))
			if used := cost(t, g.limits(t).Limits["daily-cost"].Used); used != sum || sum == 0 {
				t.Errorf("daily-cost used = $%s, want the results' $%s", used, sum)
			}
		})
	}
}

// Without a price, the same lines are refused under a dollar limit, and
// the warning says how to give one.
func TestUnpricedModelRefused(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	out, stderr, code := g.run(context.Background(), acmePrompts(3), "--daily-cost", "5")
	if code != 1 {
		t.Errorf("exit status %d, want 1: %s", code, stderr)
	}
	for _, r := range parseResults(t, out) {
		if r.Error == nil || r.Error.Type != "budget" {
			t.Errorf("result %s: error %+v, want a budget error", r.ID, r.Error)
		}
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
	for _, want := range []string{`no price known for model "acme-1"`, "--prices FILE", "gptbatch prices load FILE"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q: %s", want, stderr)
		}
	}
	// A dry run names the models it cannot price.
	_, stderr, _ = g.run(context.Background(), acmePrompts(3)+prompts(2), "--dry-run")
	if !strings.Contains(stderr, "estimated cost unknown for 3 lines: no price is known for acme-1") {
		t.Errorf("dry run's summary does not name acme-1: %s", stderr)
	}
}

// A table stored with `prices load` prices every later run that shares
// the budget, with no flag, on every host: a usage file two working
// directories name, or one Redis.
func TestStoredPrices(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	for _, tt := range []struct {
		name  string
		store func(g *gb) []string // the flags of a host sharing the budget
	}{
		{"usage file", func(g *gb) []string { return nil }},
		{"redis", func(g *gb) []string {
			return []string{"--store", rs.URL(""), "--usage-file", filepath.Join(g.t.TempDir(), "usage.md")}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newStepClock()
			ctx := context.Background()
			srv := openaitest.New(openaitest.Config{Now: clk.Now, Key: testKey})
			defer srv.Close()
			g := newGB(t, srv.URL())
			g.seams.Clock = clk
			file := writeFile(t, g.dir, "prices.json", acmeFile)
			out, stderr, code := g.run(ctx, "", append(tt.store(g), "prices", "load", file)...)
			if code != 0 || !strings.Contains(out, "stored the prices of 1 model") {
				t.Fatalf("prices load: exit status %d: %s%s", code, out, stderr)
			}
			// Another host: another directory, no price file.
			g.seams.Dir = t.TempDir()
			for _, tier := range []budget.Tier{budget.TierStandard, budget.TierBatch} {
				args := append(tt.store(g), "--daily-cost", "5")
				if tier == budget.TierBatch {
					args = append(args, "--via", "batch")
				}
				out, stderr, code = g.run(ctx, acmePrompts(5), args...)
				if code != 0 {
					t.Fatalf("run after prices load: exit status %d: %s", code, stderr)
				}
				checkCosts(t, parseResults(t, out), 5, acmePrice(tier))
			}
			out, _, _ = g.run(context.Background(), "", append(tt.store(g), "prices", "--json")...)
			var listed struct {
				Models []struct {
					Model, Source string
					Input         budget.Cost
				}
			}
			if err := json.Unmarshal([]byte(out), &listed); err != nil {
				t.Fatalf("prices --json: %v: %s", err, out)
			}
			found := false
			for _, m := range listed.Models {
				if m.Model == "acme-1" {
					found = m.Source == "stored" && m.Input.String() == "1.1"
				}
			}
			if !found {
				t.Errorf("prices --json does not list acme-1 as stored at $1.1 a million input tokens: %s", out)
			}
			if _, stderr, code := g.run(context.Background(), "", append(tt.store(g), "prices", "clear")...); code != 0 {
				t.Fatalf("prices clear: exit status %d: %s", code, stderr)
			}
			out, _, _ = g.run(context.Background(), acmePrompts(1), tt.store(g)...)
			if rs := parseResults(t, out); len(rs) != 1 || string(rs[0].CostUSD) != "null" {
				t.Errorf("after prices clear: %s, want cost_usd null", out)
			}
		})
	}
}

// gpt-5.4 is priced by the built-in table; an answer naming a dated
// snapshot the table lacks is priced as the model asked for, and one it
// lists at its own price.
func TestBuiltinAndSnapshotPrices(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Key: testKey, Snapshots: map[string]string{
		"gpt-5.4":     "gpt-5.4-2026-12-01",     // newer than the table
		"gpt-4o-mini": "gpt-4o-2024-05-13",      // a listed snapshot with a price of its own
		"gpt-5.4-pro": "gpt-5.4-pro-2026-03-05", // listed, the same price
	}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	table := budget.BuiltinPrices()
	for _, tt := range []struct {
		asked, answered, pricedAs string
	}{
		{"gpt-5.4", "gpt-5.4-2026-12-01", "gpt-5.4"},
		{"gpt-4o-mini", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"},
		{"gpt-5.4-pro", "gpt-5.4-pro-2026-03-05", "gpt-5.4-pro"},
	} {
		out, stderr, code := g.run(context.Background(), `{"prompt":"hi","model":"`+tt.asked+`"}`+"\n", "--endpoint", "responses", "--daily-cost", "5")
		if code != 0 {
			t.Fatalf("%s: exit status %d: %s", tt.asked, code, stderr)
		}
		rs := parseResults(t, out)
		m, _ := table.Lookup(tt.pricedAs)
		p, _ := m.Rates(budget.TierStandard, 0)
		checkCosts(t, rs, 1, p)
		if rs[0].Model != tt.answered {
			t.Errorf("%s answered as %q, want %q", tt.asked, rs[0].Model, tt.answered)
		}
	}
}

// service_tier priority is priced as the API bills it: at priority's
// price when the answer says it ran so.
func TestPriorityPrice(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL())
	out, stderr, code := g.run(context.Background(), prompts(3), "--model", "gpt-5.4", "--service-tier", "priority", "--daily-cost", "5")
	if code != 0 {
		t.Fatalf("exit status %d: %s%s", code, stderr, out)
	}
	m, _ := budget.BuiltinPrices().Lookup("gpt-5.4")
	p, _ := m.Rates(budget.TierPriority, 0)
	checkCosts(t, parseResults(t, out), 3, p)
}

// A bad price file exits 2 naming the file, the model and the field, and
// sends nothing; so does one in the configuration directory.
func TestBadPriceFile(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL())
	for _, tt := range []struct {
		name, body string
		want       []string
	}{
		{"not JSON", `{"acme-1": {"input_cost_per_token": 1e-6,`, []string{"not a price table"}},
		{"negative", `{"acme-1": {"litellm_provider": "openai", "input_cost_per_token": -1.1e-06}}`, []string{`model "acme-1"`, "input_cost_per_token", "negative"}},
		{"not a number", `{"acme-1": {"output_cost_per_token_batches": "cheap"}}`, []string{`model "acme-1"`, "output_cost_per_token_batches", "not a number"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, g.dir, "bad.json", tt.body)
			for _, args := range [][]string{{"--prices", file}, {"--prices", file, "--dry-run"}, {"prices", "load", file}} {
				_, stderr, code := g.run(context.Background(), acmePrompts(2), args...)
				if code != 2 {
					t.Errorf("%v: exit status %d, want 2", args, code)
				}
				for _, want := range append([]string{file}, tt.want...) {
					if !strings.Contains(stderr, want) {
						t.Errorf("%v: stderr does not say %q: %s", args, want, stderr)
					}
				}
			}
			g.setenv("XDG_CONFIG_HOME", g.dir)
			config := writeFile(t, configDir(t, g.dir), "prices.json", tt.body)
			if _, stderr, code := g.run(context.Background(), acmePrompts(2)); code != 2 || !strings.Contains(stderr, config) {
				t.Errorf("a bad %s: exit status %d, want 2 naming it: %s", config, code, stderr)
			}
			os.Remove(config)
		})
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
}

// The configuration directory's price file prices a run with no flag.
func TestConfigPriceFile(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.setenv("XDG_CONFIG_HOME", g.dir)
	writeFile(t, configDir(t, g.dir), "prices.json", acmeFile)
	out, stderr, code := g.run(context.Background(), acmePrompts(2), "--daily-cost", "1")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	checkCosts(t, parseResults(t, out), 2, acmePrice(budget.TierStandard))
}

// configDir makes gptbatch's directory in the configuration directory
// home.
func configDir(t *testing.T, home string) string {
	t.Helper()
	dir := filepath.Join(home, "gptbatch")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
