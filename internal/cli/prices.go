package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/pipeline"
)

// pricesCmd shows the price table a run prices by, and stores one with
// the shared budget or removes it.
type pricesCmd struct {
	JSON  bool          `name:"json" help:"Write JSON instead of a table."`
	Show  struct{}      `cmd:"" default:"1" hidden:"" help:"List the prices a run uses, per million tokens, and where each comes from (the default)."`
	Load  pricesLoadCmd `cmd:"" help:"Store the prices of FILE (LiteLLM's model_prices_and_context_window.json format) with the shared budget: every run sharing it, on any host, prices by them."`
	Clear struct{}      `cmd:"" help:"Remove the price table stored with the shared budget."`
}

// pricesLoadCmd stores a price file with the shared budget.
type pricesLoadCmd struct {
	File string `arg:"" type:"path" placeholder:"FILE" help:"Prices in LiteLLM's format: its whole model_prices_and_context_window.json, or a file of your own models."`
}

// readPriceFile reads a price file; an error names the file and, for a
// bad price, the model and the field.
func readPriceFile(path string) (*budget.Prices, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("price file: %w", err)
	}
	p, err := budget.ParsePrices(b, budget.SourceFile)
	if err != nil {
		return nil, fmt.Errorf("price file %s: %w", path, err)
	}
	return p, nil
}

// configPrices is $XDG_CONFIG_HOME/gptbatch/prices.json, else
// ~/.config/gptbatch/prices.json: the prices a host adds to the built-in
// table when it exists; "" when there is no home to look in.
func (r *runCmd) configPrices() string {
	path, err := r.seams.xdgPath("XDG_CONFIG_HOME", ".config", filepath.Join("gptbatch", "prices.json"))
	if err != nil {
		return ""
	}
	return path
}

// priceFiles reads the price files a run uses: the host's configuration
// file when it exists, and --prices (or $GPTBATCH_PRICES).
func (r *runCmd) priceFiles() (host, given *budget.Prices, err error) {
	if path := r.configPrices(); path != "" {
		if _, err := os.Stat(path); err == nil {
			if host, err = readPriceFile(path); err != nil {
				return nil, nil, err
			}
		}
	}
	if r.PriceFile != "" {
		if given, err = readPriceFile(r.PriceFile); err != nil {
			return nil, nil, fmt.Errorf("--prices: %w", err)
		}
	}
	return host, given, nil
}

// priceTable is the table a run prices by: the built-in one, under the
// host's configuration file, under the table stored with the budget
// (shared by every host), under --prices (this run's own choice).
func priceTable(host, stored, given *budget.Prices) *budget.Prices {
	return budget.BuiltinPrices().Over(host).Over(stored).Over(given)
}

// run shows, stores or clears the price table.
func (p *pricesCmd) run(ctx context.Context, r *runCmd, command string, stdout io.Writer) error {
	host, given, err := r.priceFiles()
	if err != nil {
		return usageError(err)
	}
	switch command {
	case "prices load <file>":
		table, err := readPriceFile(p.Load.File)
		if err != nil {
			return usageError(err)
		}
		if table.Len() == 0 {
			return usageError(fmt.Errorf("price file %s prices no OpenAI model (entries of litellm_provider \"openai\" with input_cost_per_token or output_cost_per_token)", p.Load.File))
		}
		return p.change(ctx, r, stdout, table)
	case "prices clear":
		return p.change(ctx, r, stdout, nil)
	}
	rd, err := r.openStore(ctx, true, nil)
	if err != nil {
		return usageError(err)
	}
	defer rd.Close()
	stored, err := rd.StoredPrices(ctx)
	if err != nil {
		return usageError(err)
	}
	return writePrices(stdout, rd.String(), priceTable(host, stored, given), p.JSON)
}

// change stores table with the shared budget (nil: removes it) and says
// what is stored.
func (p *pricesCmd) change(ctx context.Context, r *runCmd, stdout io.Writer, table *budget.Prices) error {
	st, err := r.openStore(ctx, false, nil)
	if err != nil {
		return usageError(err)
	}
	defer st.Close()
	where := r.storeWhere(st)
	if err := st.StorePrices(ctx, table); err != nil {
		return &pipeline.Error{Code: exitUsage, Err: fmt.Errorf("%s: %w", where, err)}
	}
	n := table.Len()
	if table == nil {
		n = 0
	}
	if p.JSON {
		return json.NewEncoder(stdout).Encode(struct {
			Store  string `json:"store"`
			Stored int    `json:"stored_models"`
		}{where, n})
	}
	if table == nil {
		_, err = fmt.Fprintf(stdout, "no price table stored with %s: runs price by the built-in table of %s\n", where, budget.PriceTableDate)
		return err
	}
	_, err = fmt.Fprintf(stdout, "stored the prices of %s with %s: every run sharing it prices by them, over the built-in table of %s\n", pipeline.Count(n, "model", "models"), where, budget.PriceTableDate)
	return err
}

// tierPrices are one tier's prices per million tokens, in dollars.
type tierPrices struct {
	Input       budget.Cost `json:"input"`
	CachedInput budget.Cost `json:"cached_input"`
	Output      budget.Cost `json:"output"`
}

// longPrices are a model's prices for a prompt of more than AboveTokens.
type longPrices struct {
	AboveTokens int64 `json:"above_tokens"`
	tierPrices
}

// modelPrices are a model's prices as `prices --json` writes them.
type modelPrices struct {
	Model string `json:"model"`
	tierPrices
	Batch       tierPrices   `json:"batch"`
	Flex        tierPrices   `json:"flex"`
	Priority    *tierPrices  `json:"priority"` // null: unknown
	LongContext []longPrices `json:"long_context,omitempty"`
	Source      string       `json:"source"`
}

// perMillion is p per million tokens.
func perMillion(p budget.Price) tierPrices {
	return tierPrices{Input: p.Input * 1_000_000, CachedInput: p.CachedInput * 1_000_000, Output: p.Output * 1_000_000}
}

// writePrices lists table, per million tokens, as a table or JSON.
func writePrices(w io.Writer, where string, table *budget.Prices, asJSON bool) error {
	var rows []modelPrices
	for _, name := range table.Models() {
		m, _ := table.Lookup(name)
		rate := func(t budget.Tier) tierPrices { p, _ := m.Rates(t, 0); return perMillion(p) }
		row := modelPrices{Model: name, tierPrices: rate(budget.TierStandard), Batch: rate(budget.TierBatch), Flex: rate(budget.TierFlex), Source: m.Source}
		if p, ok := m.Rates(budget.TierPriority, 0); ok {
			pp := perMillion(p)
			row.Priority = &pp
		}
		for _, above := range m.Thresholds() {
			p, _ := m.Rates(budget.TierStandard, above+1)
			row.LongContext = append(row.LongContext, longPrices{above, perMillion(p)})
		}
		rows = append(rows, row)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			BuiltinDate string        `json:"builtin_date"`
			Store       string        `json:"store"`
			Per         string        `json:"per"`
			Models      []modelPrices `json:"models"`
		}{budget.PriceTableDate, where, "1M tokens, USD", rows})
	}
	fmt.Fprintf(w, "prices in dollars per million tokens: the built-in table of %s, under any stored with %s and any price file\n", budget.PriceTableDate, where)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tINPUT\tCACHED\tOUTPUT\tBATCH IN/OUT\tSOURCE\t")
	for _, r := range rows {
		note := ""
		if len(r.LongContext) > 0 {
			note = fmt.Sprintf(" (more above %dk tokens)", r.LongContext[0].AboveTokens/1000)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s%s\t\n", r.Model, r.Input, r.CachedInput, r.Output, r.Batch.Input, r.Batch.Output, r.Source, note)
	}
	return tw.Flush()
}
