package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/gptbatch/gptbatch/internal/batchapi"
)

// plannedFile is a batch file of a dry run's plan.
type plannedFile struct {
	lines         int
	bytes, tokens int64
}

// planBatches is a dry run's stand-in for the batch sender: it passes the
// lines on to the estimates' writer and works out how the real run would
// split them into batch files, which DrySummary says. A line the response
// cache answers goes in none.
func (r *runner) planBatches(ctx context.Context, in <-chan *item, out chan<- *item) error {
	defer close(out)
	o := r.cfg.Batch
	day := r.cfg.Gate.Limits()
	var keys []chunkKey
	files := map[chunkKey][]plannedFile{}
	est := map[chunkKey]int64{}
	for it := range in {
		if it.result == nil && it.cached == nil && dayCheck(day, it.est) == nil {
			url := it.batchURL()
			key := chunkKey{url, it.model}
			n := int64(batchapi.InputLineLen(batchapi.LineID(it.req.Line), url, it.body))
			fs := files[key]
			if fs == nil {
				keys = append(keys, key)
			}
			if k := len(fs) - 1; k < 0 || fs[k].lines+1 > o.lines() || fs[k].bytes+n > o.bytes() ||
				(o.QueueTokens > 0 && fs[k].tokens+it.prompt > o.QueueTokens) ||
				(day.TPD > 0 && est[key]+it.est.Tokens > day.TPD) {
				fs = append(fs, plannedFile{})
				est[key] = 0
			}
			f := &fs[len(fs)-1]
			f.lines++
			f.bytes += n
			f.tokens += it.prompt
			est[key] += it.est.Tokens
			files[key] = fs
		}
		if err := send(ctx, out, it); err != nil {
			return err
		}
	}
	var b strings.Builder
	total := 0
	for _, k := range keys {
		total += len(files[k])
	}
	fmt.Fprintf(&b, "via the Batch API, at its prices (half the synchronous ones), in %d batch files:", total)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s %s:", strings.TrimPrefix(k.url, "/v1/"), k.model)
		for j, f := range files[k] {
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s (%s, %d input tokens)", Count(f.lines, "line", "lines"), shortBytes(f.bytes), f.tokens)
		}
	}
	r.stats.batchPlan.Store(b.String())
	return nil
}

// shortBytes writes n as 950 B, 12.3 KB or 4.5 MB.
func shortBytes(n int64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1f KB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
