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
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(false),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionThrottle(interval/2),
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
		for {
			if total := s.Total.Load(); total > 0 && total != max {
				max = total
				bar.ChangeMax64(total)
			}
			bar.Describe(progressLine(s, time.Now(), time.Since(start)))
			_ = bar.Set64(s.Done.Load())
			select {
			case <-t.C:
			case <-done:
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
func progressLine(s *Stats, now time.Time, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ok, %d failed | %s tok | $%.4f", s.Succeeded.Load(), s.Failed.Load(),
		shortCount(s.PromptTokens.Load()+s.CompletionTokens.Load()), budget.Cost(s.Cost.Load()).Float64())
	if secs := elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(&b, " | %.1f req/s", float64(s.Requests.Load())/secs)
	}
	if w := s.Waiting(); w != nil {
		fmt.Fprintf(&b, " | %s: %s", w.Reason, max(0, w.Until.Sub(now)).Round(time.Second))
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
func Summary(s *Stats, dryRun bool, elapsed time.Duration) string {
	if dryRun {
		return fmt.Sprintf("dry run: %d lines (%d would not be sent); %d prompt tokens, up to %d output tokens; estimated cost $%s to $%s",
			s.Done.Load(), s.Failed.Load(), s.EstPromptTokens.Load(), s.EstOutputTokens.Load(),
			budget.Cost(s.EstCostMin.Load()), budget.Cost(s.EstCostMax.Load()))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d lines: %d succeeded, %d failed", s.Done.Load(), s.Succeeded.Load(), s.Failed.Load())
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
