package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/internal/retry"
	"github.com/gptbatch/gptbatch/pipeline"
)

// batchesCmd lists the batches --via batch journalled beside the usage
// file, and cancels them.
type batchesCmd struct {
	List    batchesListCmd    `cmd:"" default:"withargs" help:"List the journalled batches with their live status (the default)."`
	Cancel  batchesCancelCmd  `cmd:"" help:"Cancel batches: they stop, and what they answered so far is kept."`
	Recover batchesRecoverCmd `cmd:"" help:"Rebuild a lost journal from the API's list of batches: record again each batch gptbatch made that the journal lacks, so that --resume collects it (--dry-run: only show them)."`
}

type batchesListCmd struct {
	JSON bool          `name:"json" help:"Write one JSON object a batch instead of a table."`
	Days time.Duration `name:"within" default:"720h" help:"Only batches submitted within this long (default 30 days, as long as the API keeps their files)."`
}

type batchesCancelCmd struct {
	IDs []string `arg:"" name:"id" help:"Batch ids (batch_...)."`
}

type batchesRecoverCmd struct {
	JSON bool          `name:"json" help:"Write one JSON object a recovered batch instead of a line."`
	All  bool          `name:"all" help:"Also the batches of runs that kept another journal (another usage file, or this one at another path)."`
	Days time.Duration `name:"within" aliases:"since" default:"720h" help:"Only batches created within this long (default 30 days, as long as the API keeps their files)."`
}

// batchConfig fills in what --via batch needs: its limits, --resume and,
// for a run that sends, the journal beside the usage file (also with a
// Redis --store: --resume collects on the host that submitted).
func (r *runCmd) batchConfig(cfg *pipeline.Config, send bool) error {
	cfg.Via = pipeline.Via(r.Via)
	if cfg.Via != pipeline.ViaBatch {
		return nil
	}
	if r.BatchLines < 1 || r.BatchLines > pipeline.DefaultBatchLines {
		return fmt.Errorf("--batch-lines must be from 1 to %d, not %d", pipeline.DefaultBatchLines, r.BatchLines)
	}
	if r.BatchQueueTokens < 0 {
		return errors.New("--batch-queue-tokens cannot be negative")
	}
	cfg.Batch = pipeline.BatchOptions{Lines: r.BatchLines, QueueTokens: r.BatchQueueTokens, Resume: r.Resume != "", ResubmitUnknown: r.ResubmitUnknown}
	if !send {
		return nil
	}
	path, temp, err := r.journalPath()
	if err != nil {
		return err
	}
	if temp {
		cfg.Log.Warn(fmt.Sprintf("the usage file is %s, so the batch journal is kept in the temporary directory: %s", os.DevNull, path))
	}
	cfg.Batch.Journal = path
	return nil
}

// journalPath is the batch journal beside the usage file (temp: in the
// temporary directory, for a usage file of /dev/null).
func (r *runCmd) journalPath() (path string, temp bool, err error) {
	usage, err := r.usagePath()
	if err != nil {
		return "", false, err
	}
	path, temp = batchapi.JournalPath(usage)
	return path, temp, nil
}

// journalAPI is the batch journal beside the usage file, and a client of
// the Batch API with the run's key.
func (r *runCmd) journalAPI() (string, *batchapi.Client, error) {
	path, _, err := r.journalPath()
	if err != nil {
		return "", nil, usageError(err)
	}
	key, err := r.apiKey()
	if err != nil {
		return "", nil, usageError(err)
	}
	return path, r.batchClient(key), nil
}

// batchClient is a client of the Batch API with the key and the run's
// --retries, which the calls that go through its retry loop use:
// recovery's listing of the batches, and its downloads of input files,
// which go on where they broke off. Retrieve and Cancel are single
// attempts.
func (r *runCmd) batchClient(key string) *batchapi.Client {
	return batchapi.New(batchapi.Config{BaseURL: r.BaseURL, Key: key, Timeout: r.Timeout, Retry: retry.Policy{Retries: r.Retries}, Clock: r.seams.Clock})
}

// batchRow is a journalled batch as `gptbatch batches` shows it.
type batchRow struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	Completed int       `json:"completed"`
	Failed    int       `json:"failed"`
	Total     int       `json:"total"`
	Model     string    `json:"model"`
	Endpoint  string    `json:"endpoint"`
	Lines     int       `json:"lines"`
	Submitted time.Time `json:"submitted"`
	Run       string    `json:"run"`
	Chunk     int       `json:"chunk"`
	Collected bool      `json:"collected"`
	Error     string    `json:"error,omitempty"` // why the live status is unknown
}

// run lists the journalled batches, with their live status.
func (l *batchesListCmd) run(ctx context.Context, r *runCmd, stdout, stderr io.Writer) error {
	path, _, err := r.journalPath()
	if err != nil {
		return usageError(err)
	}
	now := r.seams.now()
	bs, skipped, err := batchapi.ReadJournal(path, now.Add(-l.Days), false)
	r.warnSkipped(stderr, skipped)
	if err != nil {
		return usageError(err)
	}
	var api *batchapi.Client
	if len(bs) > 0 {
		key, err := r.apiKey()
		if err != nil {
			return usageError(err)
		}
		api = r.batchClient(key)
	}
	rows := make([]batchRow, 0, len(bs))
	for _, b := range bs {
		row := batchRow{
			ID: b.BatchID, Status: b.Final, Model: b.Model, Endpoint: b.Endpoint, Lines: b.Lines,
			Submitted: b.Time, Run: b.Run, Chunk: b.Chunk, Collected: b.Collected,
		}
		live, err := api.Retrieve(ctx, b.BatchID)
		if err != nil {
			row.Error = err.Error()
			if row.Status == "" {
				row.Status = "unknown"
			}
		} else {
			row.Status = live.Status
			row.Completed, row.Failed, row.Total = live.RequestCounts.Completed, live.RequestCounts.Failed, live.RequestCounts.Total
		}
		rows = append(rows, row)
	}
	if l.JSON {
		enc := json.NewEncoder(stdout)
		for _, row := range rows {
			if err := enc.Encode(row); err != nil {
				return err
			}
		}
		return nil
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintf(stdout, "no batches in %s\n", path)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATUS\tANSWERED\tMODEL\tLINES\tAGE\tRUN\tCOLLECTED")
	for _, row := range rows {
		answered := fmt.Sprintf("%d+%d/%d", row.Completed, row.Failed, row.Total)
		if row.Error != "" {
			answered = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s#%d\t%s\n", row.ID, row.Status, answered, row.Model, row.Lines,
			age(now.Sub(row.Submitted)), row.Run, row.Chunk, map[bool]string{true: "yes", false: "no"}[row.Collected])
	}
	return tw.Flush()
}

// age writes d as 45s, 12m, 3h or 2d.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// run cancels the batches named, and journals each cancellation. It
// needs only the ids and the key: a journal that cannot be read or
// written is said on stderr, and the batches are cancelled all the same.
func (c *batchesCancelCmd) run(ctx context.Context, r *runCmd, stdout, stderr io.Writer) error {
	key, err := r.apiKey()
	if err != nil {
		return usageError(err)
	}
	api := r.batchClient(key)
	j, known, err := r.cancelJournal(stderr)
	if err != nil {
		r.warn(stderr, fmt.Sprintf("%v; the cancellations are not journalled", err))
	}
	if j != nil {
		defer j.Close()
	}
	var failed []string
	for _, id := range c.IDs {
		b, err := api.Cancel(ctx, id)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		note := ""
		if j != nil && !known[id] {
			note = " (not in the journal)"
		}
		fmt.Fprintf(stdout, "%s %s%s\n", id, b.Status, note)
		if known[id] {
			if err := j.Append(batchapi.JournalRecord{Event: batchapi.EventCancelled, Time: r.seams.now(), BatchID: id}); err != nil {
				r.warn(stderr, fmt.Sprintf("%v; the cancellation of %s is not journalled", err, id))
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not cancel %s", strings.Join(failed, "; "))
	}
	return nil
}

// cancelJournal is the journal that cancellations are recorded in, open
// to append, and the batches it records.
func (r *runCmd) cancelJournal(stderr io.Writer) (*batchapi.Journal, map[string]bool, error) {
	path, _, err := r.journalPath()
	if err != nil {
		return nil, nil, err
	}
	bs, skipped, err := batchapi.ReadJournal(path, time.Time{}, false)
	r.warnSkipped(stderr, skipped)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, b := range bs {
		known[b.BatchID] = true
	}
	j, err := batchapi.OpenJournal(path)
	if err != nil {
		return nil, nil, err
	}
	return j, known, nil
}

// warnSkipped says which lines of the journal were skipped, not being
// records.
func (r *runCmd) warnSkipped(stderr io.Writer, skipped []string) {
	for _, msg := range skipped {
		r.warn(stderr, msg)
	}
}

// warn says msg on stderr, unless --quiet.
func (r *runCmd) warn(stderr io.Writer, msg string) {
	if !r.Quiet {
		fmt.Fprintf(stderr, "gptbatch: %s\n", msg)
	}
}

// run appends to the journal a submitted record for each batch gptbatch
// made that the API lists and the journal lacks, rebuilt from its input
// file; with --dry-run it only shows them. A batch whose input file was
// deleted cannot be rebuilt, and is named on stderr: gptbatch deletes the
// file once it has collected the batch and made the follow-up any of its
// lines needed, so its answers were most likely delivered. The exit status is 1 if a batch could not be rebuilt for
// another reason (a download failed): running it again tries again.
func (c *batchesRecoverCmd) run(ctx context.Context, r *runCmd, stdout, stderr io.Writer) error {
	if c.Days <= 0 {
		return usageError(fmt.Errorf("--within must be positive, not %s", c.Days))
	}
	path, api, err := r.journalAPI()
	if err != nil {
		return err
	}
	rs, skipped, rerr := batchapi.RecoverJournal(ctx, api, path, r.seams.now().Add(-c.Days), !r.DryRun, c.All)
	r.warnSkipped(stderr, skipped)
	enc := json.NewEncoder(stdout)
	var lost []string
	retry := false
	for _, rc := range rs {
		b, rec := rc.Batch, rc.Record
		if rc.Err != nil {
			why := rc.Err.Error()
			if errors.Is(rc.Err, batchapi.ErrInputDeleted) {
				why = fmt.Sprintf("its input file %s was deleted (gptbatch deletes it once it has collected the batch and made any follow-up its lines needed), so --resume cannot know its lines", b.InputFileID)
			} else {
				retry = true
			}
			fmt.Fprintf(stderr, "gptbatch: batch %s (%s#%d, %s) cannot be recovered: %s\n", b.ID, rec.Run, rec.Chunk, b.Status, why)
			lost = append(lost, b.ID)
			continue
		}
		row := batchRow{
			ID: b.ID, Status: b.Status, Model: rec.Model, Endpoint: rec.Endpoint, Lines: rec.Lines, Submitted: rec.Time,
			Run: rec.Run, Chunk: rec.Chunk, Completed: b.RequestCounts.Completed, Failed: b.RequestCounts.Failed, Total: b.RequestCounts.Total,
		}
		if c.JSON {
			err = enc.Encode(row)
		} else {
			_, err = fmt.Fprintf(stdout, "%s %s %s %s %s#%d\n", row.ID, row.Status, row.Model, pipeline.Count(row.Lines, "line", "lines"), row.Run, row.Chunk)
		}
		if err != nil {
			return err
		}
	}
	if rerr != nil {
		return rerr
	}
	if !r.Quiet {
		n := len(rs) - len(lost)
		msg := fmt.Sprintf("recovered %s into %s", pipeline.Count(n, "batch", "batches"), path)
		if r.DryRun {
			msg = fmt.Sprintf("would recover %s into %s (--dry-run: nothing written)", pipeline.Count(n, "batch", "batches"), path)
		} else if n > 0 {
			msg += "; the same command with --resume collects them"
		}
		if len(rs) == 0 {
			msg += fmt.Sprintf(": the journal has every batch gptbatch made within %s", age(c.Days))
		}
		if len(lost) > 0 {
			msg += fmt.Sprintf("; %d could not be: %s", len(lost), strings.Join(lost, ", "))
		}
		fmt.Fprintf(stderr, "gptbatch: %s\n", msg)
	}
	if retry {
		return &pipeline.Error{Code: exitFailed}
	}
	return nil
}
