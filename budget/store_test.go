package budget

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTemp(t *testing.T) *FileStore {
	t.Helper()
	f, err := OpenFile(filepath.Join(t.TempDir(), "state", "usage.md"), Options{})
	if err != nil {
		t.Fatalf("OpenFile = %v", err)
	}
	return f
}

// bump adds one to tokens_within_day and appends one ledger entry.
func bump(ctx context.Context, s Store, id string) error {
	return s.Update(ctx, time.Time{}, func(st *State, _ time.Time) ([]LedgerEntry, error) {
		st.TokensWithinDay++
		c := Cost(7)
		return []LedgerEntry{{ID: id, Model: "gpt-4o-mini", Status: 200, CostUSD: &c}}, nil
	})
}

func ledgerIDs(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	if err := ReadLedger(f, func(e LedgerEntry) error { ids = append(ids, e.ID); return nil }); err != nil {
		t.Fatalf("ReadLedger(%s) = %v", path, err)
	}
	return ids
}

func TestFileStore(t *testing.T) {
	f := openTemp(t)
	ctx := context.Background()
	if want := filepath.Join(filepath.Dir(f.path), "usage.ledger.jsonl"); f.ledger != want {
		t.Errorf("LedgerPath() = %s, want %s", f.ledger, want)
	}
	if fi, err := os.Stat(filepath.Dir(f.path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("OpenFile made its directory %v, %v; want mode 0700", fi.Mode().Perm(), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(f.path)); len(ents) != 0 {
		t.Errorf("OpenFile created %v, want nothing yet", ents)
	}
	for i := range 3 {
		if err := bump(ctx, f, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := f.Load(ctx); err != nil || st.TokensWithinDay != 3 {
		t.Errorf("Load = %+v, %v; want tokens_within_day 3", st, err)
	}
	if ids := ledgerIDs(t, f.ledger); strings.Join(ids, ",") != "0,1,2" {
		t.Errorf("ledger ids = %v, want 0,1,2", ids)
	}
	for _, p := range []string{f.path, f.path + ".lock", f.ledger} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", filepath.Base(p), fi.Mode().Perm(), err)
		}
	}
	// Nothing but the three files is left behind (no temporary files).
	if ents, _ := os.ReadDir(filepath.Dir(f.path)); len(ents) != 3 {
		t.Errorf("the directory holds %v, want usage.md, its lock and its ledger", ents)
	}
	// A failing fn writes nothing.
	before, _ := os.ReadFile(f.path)
	boom := errors.New("boom")
	err := f.Update(ctx, time.Time{}, func(st *State, _ time.Time) ([]LedgerEntry, error) {
		st.TokensWithinDay = 1000
		return []LedgerEntry{{ID: "no"}}, boom
	})
	after, _ := os.ReadFile(f.path)
	if !errors.Is(err, boom) || !bytes.Equal(before, after) || len(ledgerIDs(t, f.ledger)) != 3 {
		t.Errorf("Update with a failing fn = %v and changed the files; want %v and no change", err, boom)
	}
	// A second store on the same file (another process) sees it all.
	g, err := OpenFile(f.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := g.Load(ctx); err != nil || st.TokensWithinDay != 3 {
		t.Errorf("Load on a second store = %+v, %v; want tokens_within_day 3", st, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := bump(cancelled, f, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Update with a cancelled context = %v, want %v", err, context.Canceled)
	}
}

// A corrupt usage.md stops OpenFile, Load and Update with an error naming
// the file and the line, and is left exactly as it was.
func TestCorruptFileUntouched(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.md")
	f, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := []byte("tokens_within_min = 12\nthis is not ok\n")
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%s on a corrupt file = %v, want an error naming %s and line 2", what, err, path)
		}
	}
	_, err = OpenFile(path, Options{})
	check("OpenFile", err)
	_, err = f.Load(context.Background())
	check("Load", err)
	check("Update", bump(context.Background(), f, "x"))
	_, _, _, err = NewGate(f, Limits{RPM: 10}).Reserve(context.Background(), t0, ones(1, 1))
	check("Reserve", err)
	if b, _ := os.ReadFile(path); !bytes.Equal(b, bad) {
		t.Errorf("corrupt usage.md changed to %q", b)
	}
	if _, err := os.Stat(f.ledger); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ledger was written after a corrupt usage.md: %v", err)
	}
}

func TestReadLedger(t *testing.T) {
	const a = `{"time":"2026-11-22T12:00:00Z","id":"a","line":1,"model":"m","status":200,"prompt_tokens":9,"completion_tokens":10,"cached_tokens":0,"cost_usd":0.0000074,"latency_ms":5,"attempt":1}`
	for _, tt := range []struct {
		name, in, ids, err string
	}{
		{"whole", a + "\n" + a + "\n", "a,a", ""},
		{"empty", "", "", ""},
		{"blank lines", "\n" + a + "\n\n", "a", ""},
		{"torn final line", a + "\n" + `{"time":"2026-11`, "a", ""},
		{"final line whole but for its newline", a + "\n" + a, "a,a", ""},
		{"bad line in the middle", a + "\n" + `{"id":` + "\n" + a + "\n", "a", "line 2:"},
		{"not an entry", "[1]\n", "", "line 1:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ids []string
			err := ReadLedger(strings.NewReader(tt.in), func(e LedgerEntry) error { ids = append(ids, e.ID); return nil })
			if got := strings.Join(ids, ","); got != tt.ids || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ReadLedger = %s, %v; want %s, %q", got, err, tt.ids, tt.err)
			}
		})
	}
	var e LedgerEntry
	ReadLedger(strings.NewReader(a+"\n"), func(x LedgerEntry) error { e = x; return nil })
	if e.CostUSD == nil || *e.CostUSD != 7_400_000 || e.PromptTokens != 9 || e.Attempt != 1 {
		t.Errorf("ReadLedger entry = %+v, want cost 0.0000074, 9 prompt tokens, attempt 1", e)
	}
	stop := errors.New("stop")
	if err := ReadLedger(strings.NewReader(a+"\n"+a+"\n"), func(LedgerEntry) error { return stop }); err != stop {
		t.Errorf("ReadLedger with fn failing = %v, want fn's error", err)
	}
}

// A ledger line torn by a kill is cut off (or finished, when only the
// newline was missing) before the next append, so the ledger stays whole
// lines.
func TestLedgerRepairsTornLine(t *testing.T) {
	for _, tt := range []struct {
		name, tail, ids string
	}{
		{"torn", `{"id":"torn","mod`, "0,1"},
		{"missing newline only", `{"id":"whole"}`, "0,whole,1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := openTemp(t)
			ctx := context.Background()
			if err := bump(ctx, f, "0"); err != nil {
				t.Fatal(err)
			}
			lf, err := os.OpenFile(f.ledger, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			lf.WriteString(tt.tail)
			lf.Close()
			if err := bump(ctx, f, "1"); err != nil {
				t.Fatal(err)
			}
			if ids := strings.Join(ledgerIDs(t, f.ledger), ","); ids != tt.ids {
				t.Errorf("ledger ids = %s, want %s", ids, tt.ids)
			}
		})
	}
}

// Goroutines sharing one FileStore, and a second FileStore on the same
// file, lose no update.
func TestFileStoreConcurrent(t *testing.T) {
	f := openTemp(t)
	g, err := OpenFile(f.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*25)
	for i := range 8 {
		s := f
		if i%2 == 1 {
			s = g
		}
		wg.Go(func() {
			for j := range 25 {
				errs <- bump(context.Background(), s, fmt.Sprint(i, "-", j))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if st, err := f.Load(context.Background()); err != nil || st.TokensWithinDay != 200 {
		t.Errorf("tokens_within_day = %d, %v; want 200", st.TokensWithinDay, err)
	}
	if n := len(ledgerIDs(t, f.ledger)); n != 200 {
		t.Errorf("ledger has %d entries, want 200", n)
	}
}

const helperEnv = "GPTBATCH_BUDGET_HELPER"

// TestHelperProcess is not a test: the tests below run it in child
// processes. GPTBATCH_BUDGET_HELPER is "count:N:path" (N updates, then
// exit) or "loop:path" (updates until killed, saying "ok" after each).
func TestHelperProcess(t *testing.T) {
	mode, ok := os.LookupEnv(helperEnv)
	if !ok {
		t.Skip("run by the multi-process tests")
	}
	parts := strings.SplitN(mode, ":", 3)
	path := parts[len(parts)-1]
	f, err := OpenFile(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	for i := 0; parts[0] == "loop" || i < atoi(parts[1]); i++ {
		if err := bump(ctx, f, fmt.Sprint(os.Getpid(), "-", i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if parts[0] == "loop" {
			fmt.Println("ok")
		}
	}
	os.Exit(0)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func helper(t *testing.T, mode string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	return cmd
}

// Four processes, 200 updates each, on one usage.md: no update is lost and
// the ledger has every line, whole.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel() // on a usage file of its own; it asserts counts, not times
	f := openTemp(t)
	const procs, each = 4, 200
	var cmds []*exec.Cmd
	for range procs {
		cmd := helper(t, fmt.Sprintf("count:%d:%s", each, f.path))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	}
	if st, err := f.Load(context.Background()); err != nil || st.TokensWithinDay != procs*each {
		t.Errorf("tokens_within_day = %d, %v; want %d", st.TokensWithinDay, err, procs*each)
	}
	b, err := os.ReadFile(f.ledger)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("\n")); n != procs*each {
		t.Errorf("ledger has %d lines, want %d", n, procs*each)
	}
	if n := len(ledgerIDs(t, f.ledger)); n != procs*each {
		t.Errorf("ReadLedger read %d entries, want %d", n, procs*each)
	}
}

// A process killed (SIGKILL) at any moment of its updates leaves a
// usage.md that parses and a ledger that reads; meanwhile a reader that
// takes no lock always sees a whole usage.md.
func TestKillSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel() // on a usage file of its own; it asserts counts, not times
	f := openTemp(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	done := make(chan struct{})
	readerErr := make(chan error, 1)
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(f.path)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err == nil {
				_, err = ParseState(b)
			}
			if err != nil {
				readerErr <- err
				return
			}
		}
	})
	want := int64(0)
	for round := range 6 {
		cmd := helper(t, "loop:"+f.path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it after a different number of updates each round, in the
		// middle of the next one's write or not.
		sc := bufio.NewScanner(out)
		for range 5 + 7*round {
			if !sc.Scan() {
				t.Fatalf("helper stopped early: %v", sc.Err())
			}
			want++
		}
		cmd.Process.Kill()
		for sc.Scan() { // updates it finished before the kill
			want++
		}
		cmd.Wait()
		// It may have finished one more update without saying "ok".
		st, err := f.Load(ctx)
		if err != nil {
			t.Fatalf("round %d: usage.md after kill -9: %v", round, err)
		}
		if st.TokensWithinDay != want && st.TokensWithinDay != want+1 {
			t.Fatalf("round %d: tokens_within_day = %d, want %d or %d", round, st.TokensWithinDay, want, want+1)
		}
		want = st.TokensWithinDay
		if err := bump(ctx, f, "after"); err != nil {
			t.Fatalf("round %d: Update after kill -9: %v", round, err)
		}
		want++
		ledgerIDs(t, f.ledger) // no bad line anywhere
	}
	close(done)
	wg.Wait()
	select {
	case err := <-readerErr:
		t.Errorf("an unlocked reader saw a usage.md that does not parse: %v", err)
	default:
	}
}

// FileStore.Report reports from the ledger beside usage.md; before the
// first call there is none, and the report is empty.
func TestFileStoreReport(t *testing.T) {
	f, err := OpenFile(filepath.Join(t.TempDir(), "usage.md"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rep, err := f.Report(ctx, ReportOptions{}, time.UTC)
	if err != nil || rep.Total.Requests != 0 {
		t.Errorf("Report with no ledger = %+v, %v; want an empty report", rep, err)
	}
	c := Cost(5)
	err = f.Update(ctx, time.Time{}, func(*State, time.Time) ([]LedgerEntry, error) {
		return []LedgerEntry{{Time: t0, ID: "a", Status: 200, PromptTokens: 3, CostUSD: &c}, {Time: t0.Add(48 * time.Hour), ID: "b"}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err = f.Report(ctx, ReportOptions{Until: t0.Add(time.Hour)}, time.UTC)
	if err != nil || rep.Total.Requests != 1 || rep.Total.PromptTokens != 3 || rep.Total.CostUSD != 5 {
		t.Errorf("Report until an hour after the first call = %+v, %v; want that call alone", rep.Total, err)
	}
}

// An update whose ledger entries or state cannot be written writes
// neither: the state does not count calls the ledger lacks (a run resumed
// after it would count them again), nor the ledger calls the state lacks.
func TestFileUpdateAllOrNothing(t *testing.T) {
	// replace makes path a directory, which no write replaces.
	replace := func(t *testing.T, path string) {
		t.Helper()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, ledgerFails := range []bool{true, false} {
		t.Run(fmt.Sprintf("ledger fails %v", ledgerFails), func(t *testing.T) {
			ctx := context.Background()
			f := openTemp(t)
			if err := bump(ctx, f, "a"); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			err = f.Update(ctx, time.Time{}, func(st *State, _ time.Time) ([]LedgerEntry, error) {
				st.TokensWithinDay++
				if ledgerFails {
					replace(t, f.ledger)
				} else {
					replace(t, f.path)
				}
				return []LedgerEntry{{ID: "b", Status: 200}}, nil
			})
			if err == nil {
				t.Fatal("Update with a write failing = nil, want an error")
			}
			if b, _ := os.ReadFile(f.path); ledgerFails && !bytes.Equal(b, before) {
				t.Errorf("usage.md after a failed ledger write = %q, want it unchanged, %q", b, before)
			}
			if !ledgerFails {
				if ids := ledgerIDs(t, f.ledger); !slices.Equal(ids, []string{"a"}) {
					t.Errorf("ledger after a failed state write = %v, want [a]", ids)
				}
			}
		})
	}
}
