package pipeline

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/gptbatch/gptbatch/budget"
)

// ShowProgress draws s on w, a terminal, every interval until the returned
// stop is called, which clears the line. It draws no colour.
func ShowProgress(w io.Writer, s *Stats, interval time.Duration) (stop func()) {
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(20),
		progressbar.OptionShowCount(),
		// gptbatch's own ETA follows the recent pace, which limits set;
		// the library's follows the average since the start.
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(false),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	)
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		max := int64(-1)
		type sample struct {
			at   time.Time
			done int64
		}
		var recent []sample // the last 10 s of progress, for the ETA
		draw := func() {
			now, done := time.Now(), s.Written.Load()
			recent = append(recent, sample{now, done})
			for len(recent) > 2 && now.Sub(recent[0].at) > 10*time.Second {
				recent = recent[1:]
			}
			eta := time.Duration(-1)
			if total := s.Total.Load(); total > 0 {
				if total != max {
					max = total
					bar.ChangeMax64(total)
				}
				if d, dt := done-recent[0].done, now.Sub(recent[0].at); d > 0 {
					eta = time.Duration(float64(total-done) / float64(d) * float64(dt))
				}
			}
			bar.Describe(progressLine(s, now, time.Since(start), eta))
			_ = bar.Set64(done)
		}
		for {
			draw()
			select {
			case <-t.C:
			case <-done:
				// The last state stays up until the summary replaces it.
				draw()
				_ = bar.RenderBlank()
				_ = bar.Clear()
				return
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// progressLine is the text beside the bar: outcomes, tokens, dollars, pace
// and what the run waits for.
func progressLine(s *Stats, now time.Time, elapsed, eta time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ok, %d failed | %s tok | $%.4f", s.Succeeded.Load(), s.Failed.Load(),
		shortCount(s.PromptTokens.Load()+s.CompletionTokens.Load()), budget.Cost(s.Cost.Load()).Float64())
	if secs := elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(&b, " | %.1f req/s", float64(s.Requests.Load())/secs)
	}
	if eta >= 0 {
		fmt.Fprintf(&b, " | ETA %s", eta.Round(time.Second))
	}
	if n := s.BatchLines.Load(); n > 0 {
		fmt.Fprintf(&b, " | batches: %d/%d answered", s.BatchAnswered.Load(), n)
	}
	if w := s.Waiting(); w != nil {
		d := max(0, w.Until.Sub(now))
		if d < 10*time.Second {
			d = d.Round(100 * time.Millisecond)
		} else {
			d = d.Round(time.Second)
		}
		fmt.Fprintf(&b, " | %s: %s", w.Reason, d)
	}
	return b.String()
}

// shortCount writes n as 950, 12.3k or 4.5M.
func shortCount(n int64) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 10_000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// Summary is the end-of-run line for stderr.
func Summary(s *Stats, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d lines: %d succeeded, %d failed", s.Written.Load(), s.Succeeded.Load(), s.Failed.Load())
	if n := s.Skipped.Load(); n > 0 {
		fmt.Fprintf(&b, ", %d already done", n)
	}
	fmt.Fprintf(&b, "; tokens %d in (%d cached), %d out; $%s", s.PromptTokens.Load(), s.CachedTokens.Load(), s.CompletionTokens.Load(), budget.Cost(s.Cost.Load()))
	if n := s.Unpriced.Load(); n > 0 {
		fmt.Fprintf(&b, " (+%d calls of unknown price)", n)
	}
	fmt.Fprintf(&b, "; %s; %d retries, %d rate-limited", elapsed.Round(10*time.Millisecond), s.Retries.Load(), s.RateLimited.Load())
	return b.String()
}

// DrySummary is a dry run's report for stderr: the batch's size and cost,
// and which limits it would run into, given what used (the usage file
// now) has already spent today.
func DrySummary(s *Stats, cfg Config, used budget.State, now time.Time) string {
	var b strings.Builder
	lines, skipped := s.Written.Load(), s.Failed.Load()
	prompt, out := s.EstPromptTokens.Load(), s.EstOutputTokens.Load()
	fmt.Fprintf(&b, "dry run: %d lines", lines)
	if skipped > 0 {
		fmt.Fprintf(&b, " (%d would not be sent)", skipped)
	}
	fmt.Fprintf(&b, "; %d prompt tokens, up to %d output tokens; estimated cost $%s (prompts only) to $%s (every output cap used)",
		prompt, out, budget.Cost(s.EstCostMin.Load()), budget.Cost(s.EstCostMax.Load()))
	var hits []string
	l := cfg.Gate.Limits()
	sent := lines - skipped
	if cfg.BatchTokens > 0 && prompt > cfg.BatchTokens {
		hits = append(hits, fmt.Sprintf("--batch-tokens %d: refused, nothing would be sent", cfg.BatchTokens))
	}
	if maxCost := budget.Cost(s.EstCostMax.Load()); cfg.MaxCost > 0 && maxCost > cfg.MaxCost {
		hits = append(hits, fmt.Sprintf("--max-cost %s: refused, nothing would be sent", cfg.MaxCost))
	}
	if skipped > 0 {
		hits = append(hits, fmt.Sprintf("%d lines are invalid or exceed a limit on their own", skipped))
	}
	today := used.Date == now.Format(time.DateOnly)
	dayTokens, dayCost := int64(0), budget.Cost(0)
	if today {
		dayTokens, dayCost = used.TokensWithinDay, used.CostWithinDay
	}
	if l.TPD > 0 && dayTokens+prompt+out > l.TPD {
		hits = append(hits, fmt.Sprintf("--tpd %d: %d already used today, the batch may need %d", l.TPD, dayTokens, prompt+out))
	}
	if c := budget.Cost(s.EstCostMax.Load()); l.DailyCost > 0 && dayCost+c > l.DailyCost {
		hits = append(hits, fmt.Sprintf("--daily-cost %s: $%s already spent today, the batch may cost $%s", l.DailyCost, dayCost, c))
	}
	var pace time.Duration
	if cfg.Via == ViaBatch {
		l.RPM, l.TPM = 0, 0 // the Batch API has its own pool
	}
	if l.RPM > 0 && sent > l.RPM {
		pace = max(pace, time.Duration(float64(sent-l.RPM)/float64(l.RPM)*float64(time.Minute)))
	}
	if l.TPM > 0 && prompt+out > l.TPM {
		pace = max(pace, time.Duration(float64(prompt+out-l.TPM)/float64(l.TPM)*float64(time.Minute)))
	}
	if pace > 0 {
		hits = append(hits, fmt.Sprintf("--rpm %d / --tpm %d: at least %s of waiting", l.RPM, l.TPM, pace.Round(time.Second)))
	}
	if len(hits) == 0 {
		b.WriteString("; within every limit")
	} else {
		b.WriteString("; limits: " + strings.Join(hits, "; "))
	}
	if plan, ok := s.batchPlan.Load().(string); ok {
		b.WriteString("; " + plan)
	}
	return b.String()
}
