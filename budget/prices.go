package budget

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// PriceTableDate is when the built-in table was checked against OpenAI's.
const PriceTableDate = "2026-07-30"

// Price sources: where a model's price in a table comes from.
const (
	SourceBuiltin = "built-in" // the table compiled into gptbatch
	SourceStored  = "stored"   // stored with the shared budget (`prices load`)
	SourceFile    = "file"     // a price file given to this run
)

// Tier is the way a call is served, each billed at its own prices.
type Tier uint8

// The tiers, as OpenAI bills them.
const (
	TierStandard Tier = iota // the list price
	TierBatch                // the Batch API
	TierFlex                 // service_tier "flex"
	TierPriority             // service_tier "priority"
	numTiers
)

// TierOf is the tier a service_tier names (else TierStandard).
func TierOf(serviceTier string) Tier {
	switch serviceTier {
	case "flex":
		return TierFlex
	case "priority":
		return TierPriority
	}
	return TierStandard
}

// Price is what one tier of a model costs per token.
type Price struct{ Input, CachedInput, Output Cost }

// Batch is half of every price of p, rounded up: the Batch API's and
// flex's price where a table gives none.
func (p Price) Batch() Price {
	half := func(c Cost) Cost { return c/2 + c%2 }
	return Price{Input: half(p.Input), CachedInput: half(p.CachedInput), Output: half(p.Output)}
}

// Cost is the price of a call: uncached and cached prompt tokens and
// completion tokens, each at its price.
func (p Price) Cost(promptTokens, cachedTokens, completionTokens int64) Cost {
	cachedTokens = min(max(cachedTokens, 0), promptTokens)
	return Cost(promptTokens-cachedTokens)*p.Input + Cost(cachedTokens)*p.CachedInput + Cost(completionTokens)*p.Output
}

// ModelPrice is what one model costs per token on each tier and past each
// long-context threshold; safe for concurrent use.
type ModelPrice struct {
	tiers rates
	long  []longRates // by above, ascending
	// Source says where the price comes from (SourceBuiltin, ...).
	Source string

	// answered is AnswerPrice's last for this model: comparing names is a
	// fifth of a map lookup, on every result.
	answered atomic.Pointer[answerMemo]
}

// answerMemo is the price AnswerPrice found for an answer naming name, in table.
type answerMemo struct {
	table *Prices
	name  string
	price *ModelPrice
}

// rates are the prices of every tier; priority only when the table has it.
type rates struct {
	tier     [numTiers]Price
	priority bool
}

// longRates bill a whole call whose prompt has more than above tokens.
type longRates struct {
	above int64
	rates
}

// Rates is the price of a call on tier t with promptTokens, past a
// threshold the long-context one (for priority, the standard one unless
// given, as OpenAI bills it); ok is false for an unknown priority price.
func (m *ModelPrice) Rates(t Tier, promptTokens int64) (p Price, ok bool) {
	for i := len(m.long) - 1; i >= 0; i-- {
		if l := &m.long[i]; promptTokens > l.above {
			if t == TierPriority && !l.priority {
				t = TierStandard
			}
			return l.tier[t], true
		}
	}
	if t == TierPriority && !m.tiers.priority {
		return Price{}, false
	}
	return m.tiers.tier[t], true
}

// Cost is the cost of a call on tier t (see Rates).
func (m *ModelPrice) Cost(t Tier, promptTokens, cachedTokens, completionTokens int64) (Cost, bool) {
	p, ok := m.Rates(t, promptTokens)
	if !ok {
		return 0, false
	}
	return p.Cost(promptTokens, cachedTokens, completionTokens), true
}

// Estimate is what a call on tier t that sends promptTokens and may get
// up to maxOutput back reserves: its tokens and, at m's price on t, its
// cost at most; the cost is unknown when the price, or its price on t, is
// (m may be nil: an unknown price).
func (m *ModelPrice) Estimate(t Tier, promptTokens, maxOutput int64) Estimate {
	if m == nil {
		return Estimate{Tokens: promptTokens + maxOutput, CostUnknown: true}
	}
	c, ok := m.Cost(t, promptTokens, 0, maxOutput)
	return Estimate{Tokens: promptTokens + maxOutput, Cost: c, CostUnknown: !ok}
}

// Prices is a price table, by exact model name; nil is the built-in one.
// It never changes once made and is safe for concurrent use.
type Prices struct {
	models map[string]*ModelPrice
	// last is Lookup's last: a batch's lines mostly name one model.
	last atomic.Pointer[lookupMemo]
}

// lookupMemo is what Lookup found for name.
type lookupMemo struct {
	name  string
	price *ModelPrice
	ok    bool
}

//go:embed prices_builtin.json
var builtinJSON []byte

// builtin parses the built-in table once, when it is first needed.
var builtin = sync.OnceValue(func() *Prices {
	p, err := ParsePrices(builtinJSON, SourceBuiltin)
	if err != nil {
		panic("budget: the built-in price table: " + err.Error())
	}
	return p
})

// orBuiltin is p, or the built-in table for a nil p.
func (p *Prices) orBuiltin() *Prices {
	if p == nil {
		return builtin()
	}
	return p
}

// BuiltinPrices is OpenAI's list prices of PriceTableDate, compiled in.
func BuiltinPrices() *Prices { return builtin() }

// Lookup finds a model's price by its exact name, a base name or a dated
// snapshot. Snapshots do not always cost what their base model costs, so
// any name the table does not list is unknown (ok is false), never free.
func (p *Prices) Lookup(model string) (m *ModelPrice, ok bool) {
	p = p.orBuiltin()
	if l := p.last.Load(); l != nil && l.name == model {
		return l.price, l.ok
	}
	m, ok = p.models[model]
	p.last.Store(&lookupMemo{name: model, price: m, ok: ok})
	return m, ok
}

// Quote is model's price in p (nil when unknown; see Lookup) and the
// Estimate of a call of it on tier t.
func (p *Prices) Quote(model string, t Tier, promptTokens, maxOutput int64) (*ModelPrice, Estimate) {
	m, _ := p.Lookup(model)
	return m, m.Estimate(t, promptTokens, maxOutput)
}

// AnswerPrice is the per-token price of an answer naming answered (a
// dated snapshot, say), billed on tier t, with a prompt of promptTokens,
// to a request priced asked (not nil): answered's own price on t when the
// table lists it, else asked's, long context included. An answer served
// at priority to a model whose priority price is unknown is at its
// standard price.
func (p *Prices) AnswerPrice(asked *ModelPrice, answered string, t Tier, promptTokens int64) Price {
	p, m := p.orBuiltin(), asked
	switch a := asked.answered.Load(); {
	case answered == "":
	case a != nil && a.table == p && a.name == answered:
		m = a.price
	default:
		if listed, ok := p.models[answered]; ok {
			m = listed
		}
		asked.answered.Store(&answerMemo{table: p, name: answered, price: m})
	}
	r, ok := m.Rates(t, promptTokens)
	if !ok {
		r, ok = asked.Rates(t, promptTokens)
	}
	if !ok {
		r, _ = asked.Rates(TierStandard, promptTokens)
	}
	return r
}

// PriceOf is a model's list price in the built-in table; see Lookup.
func PriceOf(model string) (Price, bool) {
	m, ok := BuiltinPrices().Lookup(model)
	if !ok {
		return Price{}, false
	}
	return m.tiers.tier[TierStandard], true
}

// Over is p with top's models replacing p's.
func (p *Prices) Over(top *Prices) *Prices {
	p = p.orBuiltin()
	if top == nil || len(top.models) == 0 {
		return p
	}
	out := &Prices{models: maps.Clone(p.models)}
	maps.Copy(out.models, top.models)
	return out
}

// Len is the number of models p prices.
func (p *Prices) Len() int { return len(p.orBuiltin().models) }

// Models are the names of the models p prices, sorted.
func (p *Prices) Models() []string { return slices.Sorted(maps.Keys(p.orBuiltin().models)) }

// PriceError is a price a price file gives wrong.
type PriceError struct {
	Model, Field string
	Err          error
}

func (e *PriceError) Error() string {
	return fmt.Sprintf("model %q: %s: %v", e.Model, e.Field, e.Err)
}

// The fields ParsePrices reads, each then _above_<N>k_tokens and a tier's.
var (
	priceBases = [3]string{"input_cost_per_token", "cache_read_input_token_cost", "output_cost_per_token"}
	tierSuffix = [numTiers]string{"", "_batches", "_flex", "_priority"}
)

// ParsePrices reads a price table in the format of LiteLLM's
// model_prices_and_context_window.json: model names to, in dollars per
// token, input_cost_per_token, output_cost_per_token and
// cache_read_input_token_cost (else cached tokens bill as input), each
// optionally for a long context (_above_272k_tokens) and a tier (_batches,
// _flex, _priority). Batch and flex prices not given are half the standard
// ones; a priority price is known only when input and output are given.
//
// Only OpenAI's models are read: a litellm_provider of "openai" or none;
// "openai/NAME" prices NAME unless NAME is there too. Anything else is
// ignored, so that LiteLLM's whole file reads. A price that is not a
// number, negative or above $0.01 a token is a *PriceError. Prices are
// read exactly, never through a float. Every model gets source as Source.
func ParsePrices(b []byte, source string) (*Prices, error) {
	var entries map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&entries); err != nil {
		return nil, fmt.Errorf("not a price table in LiteLLM's format (a JSON object of models): %w", err)
	}
	if d.More() {
		return nil, errors.New("not a price table in LiteLLM's format: more than one JSON value")
	}
	p := &Prices{models: make(map[string]*ModelPrice)}
	for key, raw := range entries {
		name, prefixed := strings.CutPrefix(key, "openai/")
		if prefixed {
			if _, ok := entries[name]; ok {
				continue
			}
		}
		m, err := parseModel(key, raw)
		if err != nil {
			return nil, err
		}
		if m != nil {
			m.Source = source
			p.models[name] = m
		}
	}
	return p, nil
}

// parseModel reads one entry; nil for one not OpenAI's or not per token.
func parseModel(key string, raw json.RawMessage) (*ModelPrice, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, nil
	}
	if prov, ok := fields["litellm_provider"]; ok {
		var s string
		if json.Unmarshal(prov, &s) != nil || s != "openai" {
			return nil, nil
		}
	}
	// Prices by threshold (0: none), base and tier; nil where not given.
	type given [len(priceBases)][numTiers]*Cost
	groups := map[int64]given{}
	for f, v := range fields {
		base, above, tier, ok := priceField(f)
		if !ok {
			continue
		}
		c, err := parsePrice(v)
		if err != nil {
			return nil, &PriceError{Model: key, Field: f, Err: err}
		}
		g := groups[above]
		g[base][tier] = &c
		groups[above] = g
	}
	std := groups[0]
	if std[0][TierStandard] == nil && std[2][TierStandard] == nil {
		return nil, nil
	}
	// build fills a group's tiers, each price not given from def's: the
	// standard tier's from def, batch and flex from half the standard.
	build := func(g given, def Price) rates {
		tier := func(t Tier, d Price) Price {
			val := func(base int, d Cost) Cost {
				if c := g[base][t]; c != nil {
					return *c
				}
				return d
			}
			return Price{Input: val(0, d.Input), CachedInput: val(1, d.CachedInput), Output: val(2, d.Output)}
		}
		if in := g[0][TierStandard]; in != nil {
			def.CachedInput = *in // an input price without a cached one: no discount
		}
		var r rates
		r.tier[TierStandard] = tier(TierStandard, def)
		half := r.tier[TierStandard].Batch()
		r.tier[TierBatch], r.tier[TierFlex] = tier(TierBatch, half), tier(TierFlex, half)
		if in := g[0][TierPriority]; in != nil && g[2][TierPriority] != nil {
			r.tier[TierPriority], r.priority = tier(TierPriority, Price{CachedInput: *in}), true
		}
		return r
	}
	m := &ModelPrice{tiers: build(std, Price{})}
	for above, g := range groups {
		if above > 0 {
			m.long = append(m.long, longRates{above: above, rates: build(g, m.tiers.tier[TierStandard])})
		}
	}
	slices.SortFunc(m.long, func(a, b longRates) int { return int(a.above - b.above) })
	return m, nil
}

// priceField splits a field into its base (priceBases' index), threshold
// (0: none) and tier; ok is false for any other field.
func priceField(f string) (base int, above int64, tier Tier, ok bool) {
	base = -1
	for i, b := range priceBases {
		if rest, found := strings.CutPrefix(f, b); found {
			base, f = i, rest
			break
		}
	}
	if base < 0 {
		return 0, 0, 0, false
	}
	if rest, found := strings.CutPrefix(f, "_above_"); found {
		n, after, found := strings.Cut(rest, "k_tokens")
		k, err := strconv.ParseInt(n, 10, 32)
		if !found || err != nil || k <= 0 || !isDigits(n) {
			return 0, 0, 0, false
		}
		above, f = k*1000, after
	}
	for t, s := range tierSuffix {
		if f == s {
			return base, above, Tier(t), true
		}
	}
	return 0, 0, 0, false
}

// parsePrice reads a price in dollars per token, a JSON number.
func parsePrice(v json.RawMessage) (Cost, error) {
	s := string(bytes.TrimSpace(v))
	if s == "" || !(s[0] == '-' || s[0] >= '0' && s[0] <= '9') {
		return 0, fmt.Errorf("%.40s is not a number", s)
	}
	c, err := parseDollars(s, false)
	if err == nil && c > maxPrice {
		err = fmt.Errorf("%s is more than $%s a token", s, maxPrice)
	}
	return c, err
}

// maxPrice bounds a price, far from overflowing a Cost of a large call.
const maxPrice = Dollar / 100

// Thresholds are the prompt sizes with long-context prices past, ascending.
func (m *ModelPrice) Thresholds() []int64 {
	out := make([]int64, len(m.long))
	for i, l := range m.long {
		out[i] = l.above
	}
	return out
}

// Format writes p in LiteLLM's format, as ParsePrices reads it back.
func (p *Prices) Format() []byte {
	p = p.orBuiltin()
	b := []byte("{")
	for i, name := range p.Models() {
		m := p.models[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    "...)
		b = jsonenc.AppendString(b, name, true)
		b = append(b, `: {"litellm_provider": "openai"`...)
		group := func(r *rates, above string) {
			for t := range numTiers {
				if Tier(t) == TierPriority && !r.priority {
					continue
				}
				pr := r.tier[t]
				for base, c := range [3]Cost{pr.Input, pr.CachedInput, pr.Output} {
					b = fmt.Appendf(b, `, "%s%s%s": %s`, priceBases[base], above, tierSuffix[t], c)
				}
			}
		}
		group(&m.tiers, "")
		for _, l := range m.long {
			group(&l.rates, fmt.Sprintf("_above_%dk_tokens", l.above/1000))
		}
		b = append(b, '}')
	}
	return append(b, "\n}\n"...)
}
