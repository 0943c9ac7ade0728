package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/jsonl"
)

// --resume through the Batch API: the lines a journal says were submitted
// already are claimed from their batches, which are collected instead of
// submitting the lines again. The methods here are the submitter's
// (batchsubmit.go), and run on its goroutine.

// batchCheck is what the API said of a journalled batch that lines are
// claimed from.
type batchCheck int

const (
	batchKnown    batchCheck = iota // the API has it (or could not say): collect it
	batchResubmit                   // unknown, and --resubmit-unknown: submit its lines again
	batchRefused                    // unknown: the run stops
)

// check asks the API, once a batch, whether it knows the journalled batch
// lines are claimed from. One made with another API key or at another
// base URL is unknown there (404): it cannot be collected, yet it may
// still run and bill, so submitting its lines again must be asked for
// (--resubmit-unknown). Without that the run stops, naming the batch:
// exit 2 when nothing was submitted yet. A retrieval that fails otherwise
// is left to the poller.
func (s *submitter) check(ctx context.Context, idx int32) batchCheck {
	if v, ok := s.checked[idx]; ok {
		return v
	}
	r, jb := s.r, s.claims.batches[idx]
	f, ok := s.api.Retry(ctx, "retrieve batch", r.stop.signal.Done(), func(ctx context.Context) error {
		_, err := s.api.Retrieve(ctx, jb.BatchID)
		return err
	})
	v := batchKnown
	if !ok && f.Status == http.StatusNotFound {
		where := r.cfg.BaseURL
		if u, err := url.Parse(where); err == nil {
			where = u.Redacted()
		}
		if r.cfg.Batch.ResubmitUnknown {
			v = batchResubmit
			r.cfg.Log.Warn(fmt.Sprintf("the API at %s does not know batch %s (journalled %s): submitting its lines again (--resubmit-unknown)", where, jb.BatchID, jb.Time.Format(time.RFC3339)))
		} else {
			v = batchRefused
			code := ExitConfig
			if r.stats.BatchLines.Load() > 0 {
				code = ExitFailed
			}
			msg := fmt.Sprintf("the API at %s does not know batch %s, journalled %s by %s: it was made with another API key or base URL", where, jb.BatchID, jb.Time.Format(time.RFC3339), jb.Run)
			r.stop.halt(&stopped{typ: jsonl.ErrAPI, status: http.StatusNotFound, msg: "not sent: " + msg,
				err: &Error{Code: code, Err: fmt.Errorf("--resume: %s. Its lines are not submitted again, as it may still run and bill: run with the key and --base-url that made it, or add --resubmit-unknown to submit them again", msg)}})
		}
	}
	s.checked[idx] = v
	return v
}

// settledBefore asks the ledger how many results of each claimed batch
// not yet collected in full an earlier run settled, before a signal, a
// kill or a broken download stopped it: collecting counts only the rest.
func (s *submitter) settledBefore(ctx context.Context) error {
	ids := map[string]bool{}
	var since time.Time
	for _, b := range s.claimed {
		if b.collected {
			continue
		}
		ids[b.id] = true
		if since.IsZero() || b.submitted.Before(since) {
			since = b.submitted
		}
	}
	n, err := s.r.cfg.Gate.BatchEntries(ctx, since, ids)
	if err != nil {
		return &Error{Code: ExitConfig, Err: fmt.Errorf("read the ledger: %w", err)}
	}
	for _, b := range s.claimed {
		if b.settled = n[b.id]; b.settled > 0 {
			s.r.cfg.Log.Info("results of a journalled batch already in the ledger", "batch", b.id, "results", b.settled)
		}
	}
	return nil
}

// count is how many batches the journal offered.
func (c *claims) count() int {
	if c == nil {
		return 0
	}
	return len(c.batches)
}

// claim puts line l, of head h, in the journalled batch it was claimed
// from, after before batches it was in.
func (s *submitter) claim(l bline, h []byte, c claim, before int) {
	b := s.claimed[c.batch]
	if b == nil {
		jb := s.claims.batches[c.batch]
		b = &tbatch{
			id: jb.BatchID, inputFile: jb.InputFileID, endpoint: jb.Endpoint, model: jb.Model, chunk: jb.Chunk,
			byCustom: map[string]int32{}, est: budget.Estimate{Tokens: jb.EstTokens, Cost: jb.EstCost}, day: jb.Day,
			tokens: jb.InputTokens, submitted: jb.Time, claimed: true, collected: jb.Collected,
		}
		s.claimed[c.batch] = b
		s.register(b)
		s.r.cfg.Log.Info("collecting a journalled batch instead of submitting its lines again", "batch", b.id, "submitted", b.submitted.Format(time.RFC3339))
	}
	l.tries = uint8(min(1+before, 255))
	b.heads = s.head(b.heads, b.lines, &l, h)
	b.byCustom[c.customID] = int32(len(b.lines))
	b.lines = append(b.lines, l)
}

// claims are the journalled lines --resume may collect instead of
// submitting them again, by content hash.
type claims struct {
	batches []*batchapi.JournalBatch
	byHash  map[string][]claim
}

type claim struct {
	batch    int32 // in batches
	customID string
	tries    json.RawMessage // batchapi.JournalItem.Tries
}

// loadClaims reads the journal's batches of the last 30 days into claims;
// skipped says which lines are not records.
func loadClaims(path string, now time.Time) (*claims, []string, error) {
	bs, skipped, err := batchapi.ReadJournal(path, now.Add(-batchapi.ClaimWindow), true)
	if err != nil {
		return nil, skipped, err
	}
	c := &claims{batches: bs, byHash: map[string][]claim{}}
	for i, b := range bs {
		for _, it := range b.Items {
			c.byHash[it.Hash] = append(c.byHash[it.Hash], claim{int32(i), it.CustomID, it.Tries})
		}
		b.Items = nil
	}
	return c, skipped, nil
}

// take claims a journalled line with this content hash, the one submitted
// last: a line resubmitted after a failure is answered in its latest batch.
func (c *claims) take(hash string) (claim, bool) {
	cs := c.byHash[hash]
	if len(cs) == 0 {
		return claim{}, false
	}
	last := cs[len(cs)-1]
	if len(cs) == 1 {
		delete(c.byHash, hash)
	} else {
		c.byHash[hash] = cs[:len(cs)-1]
	}
	return last, true
}
