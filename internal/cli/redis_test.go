package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// These tests run gptbatch as processes, hosts that share no file, only one
// real redis-server (--store), started by the test on 127.0.0.1.

// host is gptbatch on a host of its own: its own usage path, the shared
// Redis at url.
func host(t *testing.T, url, api, stdin string, args ...string) *exec.Cmd {
	t.Helper()
	return command(t, t.TempDir(), api, stdin, append([]string{"--store", url}, args...)...)
}

// answeredPrompts counts the 200 answers the fake API sent, by the prompt
// they answered.
func answeredPrompts(t *testing.T, srv *openaitest.Server) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, r := range srv.Requests() {
		if r.Status != 200 {
			continue
		}
		var body struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil || len(body.Messages) == 0 {
			t.Fatalf("a request the fake API answered has no messages: %v: %s", err, r.Body)
		}
		n[body.Messages[len(body.Messages)-1].Content]++
	}
	return n
}

// Four hosts (two with clocks minutes off) share one budget in Redis and
// keep the server's rpm with no 429; a fifth host's usage reports every
// host's calls, and its dry run reads what the day has used.
func TestRedisHostsShareLimits(t *testing.T) {
	rs := redistest.Start(t)
	url := rs.URL("")
	// 1320 requests at rpm 1200: the last 120 go at the limit's pace,
	// 20 a second, so a bucket that is not shared, or that runs on a
	// skewed host's clock, meets 429s.
	srv := openaitest.New(openaitest.Config{RPM: 1200, Latency: 20 * time.Millisecond})
	defer srv.Close()
	const hosts, each = 4, 330
	offsets := []string{"0s", "7m", "-5m", "0s"}
	var wg sync.WaitGroup
	outs, errs := make([]bytes.Buffer, hosts), make([]bytes.Buffer, hosts)
	codes := make([]int, hosts)
	for i := range hosts {
		cmd := host(t, url, srv.URL(), prompts(each), "--rpm", "1200", "--tpm", "0", "--parallel", "32", "--batch-tokens", "0")
		cmd.Env = append(cmd.Env, clockOffsetEnv+"="+offsets[i])
		cmd.Stdout, cmd.Stderr = &outs[i], &errs[i]
		wg.Go(func() {
			_ = cmd.Run()
			codes[i] = cmd.ProcessState.ExitCode()
		})
	}
	wg.Wait()
	for i := range hosts {
		if codes[i] != 0 || errs[i].Len() > 0 {
			t.Errorf("host %d (clock %s): exit status %d, stderr %q; want 0 and nothing said", i, offsets[i], codes[i], errs[i].String())
		}
		ok := 0
		for _, r := range parseResults(t, outs[i].String()) {
			if r.Error == nil {
				ok++
			}
		}
		if ok != each {
			t.Errorf("host %d: %d answered, want %d", i, ok, each)
		}
	}
	st := checkSharedPace(t, srv, hosts*each)

	// The buckets ran on Redis's clock, not on a skewed host's.
	rstore, err := budget.OpenRedis(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rstore.Close()
	state, err := rstore.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(state.Updated); d > time.Minute || d < -time.Minute || state.TokensWithinDay != st.PromptTokens+st.CompletionTokens {
		t.Errorf("shared state: updated %v from now, %d tokens today; want Redis's now and %d tokens", d, state.TokensWithinDay, st.PromptTokens+st.CompletionTokens)
	}

	// The skewed hosts were skewed: their ledger entries carry their time.
	// The ledger has an entry a call, so a host that met one of the 429s
	// checkSharedPace allows has one more than its lines.
	ahead, behind := 0, 0
	err = rstore.Ledger(context.Background(), time.Time{}, func(e budget.LedgerEntry) error {
		switch d := time.Until(e.Time); {
		case d > 6*time.Minute:
			ahead++
		case d < -4*time.Minute:
			behind++
		}
		return nil
	})
	if err != nil || ahead < each || behind < each || ahead+behind > 2*each+st.RateLimited {
		t.Errorf("ledger: %d entries 7 min ahead, %d 5 min behind, %v; want %d each, and with the %d 429s at most %d together",
			ahead, behind, err, each, st.RateLimited, 2*each+st.RateLimited)
	}

	// The ledger keeps each host's own time: within 10 minutes of
	// midnight a skewed host's calls fall in the next or the last day.
	period := []string{"--today"}
	if now := time.Now(); now.Add(10*time.Minute).Day() != now.Day() || now.Add(-10*time.Minute).Day() != now.Day() {
		period = []string{"--since", now.AddDate(0, 0, -1).Format(time.DateOnly)}
	}
	var out, errb bytes.Buffer
	cmd := host(t, url, srv.URL(), "", append([]string{"usage", "--json"}, period...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("usage --store: %v: %s", err, errb.String())
	}
	var rep struct {
		Total struct {
			Requests  int `json:"requests"`
			Succeeded int `json:"succeeded"`
		} `json:"total"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("usage --json: %v: %s", err, out.String())
	}
	if rep.Total.Requests != st.Requests || rep.Total.Succeeded != hosts*each {
		t.Errorf("usage %s --json --store on a fifth host: %d requests, %d succeeded; want %d (every call the fake API had) and %d: %s",
			period, rep.Total.Requests, rep.Total.Succeeded, st.Requests, hosts*each, out.String())
	}

	errb.Reset()
	cmd = host(t, url, "", prompts(3), "--dry-run", "--tpd", "1000")
	cmd.Args = slicesDelete(cmd.Args, "--quiet")
	cmd.Stdout, cmd.Stderr = new(bytes.Buffer), &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("dry run --store: %v: %s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "--tpd 1000: ") || strings.Contains(errb.String(), "--tpd 1000: 0 already used") {
		t.Errorf("dry run --store --tpd 1000 said %q; want the day's use read from Redis", errb.String())
	}
}

// slicesDelete is args without v.
func slicesDelete(args []string, v string) []string {
	var out []string
	for _, a := range args {
		if a != v {
			out = append(out, a)
		}
	}
	return out
}

// A Redis that does not answer at start is exit 2 with nothing sent and a
// message naming the store without its password.
func TestRedisUnreachable(t *testing.T) {
	t.Parallel() // a process of its own: nothing of this one is shared
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	rs := redistest.Start(t, "--requirepass", "s3cret")
	rs.Kill()
	url := rs.URL("s3cret")
	for _, args := range [][]string{nil, {"usage", "--today"}, {"--dry-run"}} {
		t.Run(strings.Join(append([]string{"run"}, args...), " "), func(t *testing.T) {
			var errb bytes.Buffer
			cmd := host(t, url, srv.URL(), prompts(5), args...)
			cmd.Stdout, cmd.Stderr = new(bytes.Buffer), &errb
			_ = cmd.Run()
			msg := errb.String()
			if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(msg, "redis://:xxxxx@"+rs.Addr+"/0") || strings.Contains(msg, "s3cret") || strings.Count(msg, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 2 and one line naming the store, password redacted", code, msg)
			}
		})
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("the API got %d requests, want none", n)
	}
}

// Redis killed mid-run: the run stops sending, finishes what is in flight,
// gives every line it read a result, says the shared store failed and
// exits 1;
// with Redis back, --resume answers the rest and no prompt is answered
// twice. A cluster whose node holding the budget's slot dies is the same.
func TestRedisKilledMidRun(t *testing.T) {
	t.Parallel() // a process of its own: nothing of this one is shared
	t.Run("one server", func(t *testing.T) {
		t.Parallel()
		rs := redistest.Start(t, "--requirepass", "s3cret")
		redisKilledMidRun(t, rs.URL("s3cret"), "redis://:xxxxx@"+rs.Addr+"/0", rs.Kill, func() { rs.Restart(t) })
	})
	t.Run("cluster node of the budget's slot", func(t *testing.T) {
		t.Parallel()
		c := redistest.StartCluster(t)
		o, err := redis.ParseClusterURL(c.SeedsURL())
		if err != nil {
			t.Fatal(err)
		}
		cc := redis.NewClusterClient(o)
		defer cc.Close()
		m, err := cc.MasterForKey(context.Background(), "{gptbatch:default}:state")
		if err != nil {
			t.Fatal(err)
		}
		node := c.Server(m.Options().Addr)
		if node == nil {
			t.Fatalf("no node of the cluster is %s", m.Options().Addr)
		}
		redisKilledMidRun(t, c.URL(), c.URL(), func() { c.Stop(node) }, func() { c.Restart(t, node) })
	})
}

// redisKilledMidRun runs gptbatch against the Redis at url (named where in
// messages), kills it with kill mid-run, brings it back with restart and
// resumes.
func redisKilledMidRun(t *testing.T, url, where string, kill, restart func()) {
	srv := openaitest.New(openaitest.Config{Latency: 30 * time.Millisecond})
	defer srv.Close()
	const n = 300
	in := prompts(n)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd := host(t, url, srv.URL(), in, "--parallel", "8", "--batch-tokens", "0")
	cmd.Stdout, cmd.Stderr = f, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitServer(srv.WaitArrivals, 40); err != nil {
		t.Fatal(err)
	}
	kill()
	_ = cmd.Wait()
	f.Close()
	msg := errb.String()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(msg, "shared budget store failed") || !strings.Contains(msg, where) || strings.Contains(msg, "s3cret") {
		t.Errorf("with Redis killed: exit %d, stderr %q; want 1, saying the shared store failed and naming it (%s) without its password", code, msg, where)
	}
	first, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// The run stops reading when it stops sending; every line it read
	// has its result, in order: answered, or not sent.
	results := parseResults(t, string(first))
	answered := 0
	for i, r := range results {
		switch {
		case r.Line != i+1:
			t.Fatalf("result %d is of line %d: a line read has no result", i+1, r.Line)
		case r.Error == nil:
			answered++
		case r.Error.Type != "interrupted" || !strings.Contains(r.Error.Message, "the shared budget store failed"):
			t.Errorf("line %d: error %+v, want an answer or an interrupted line saying the shared budget store failed", r.Line, *r.Error)
		}
	}
	if answered == 0 || answered == len(results) {
		t.Fatalf("%d results, %d answered; want some answered and the rest not sent", len(results), answered)
	}

	restart()
	var out2 bytes.Buffer
	errb.Reset()
	cmd = host(t, url, srv.URL(), in, "--parallel", "8", "--batch-tokens", "0", "--resume", out)
	cmd.Stdout, cmd.Stderr = &out2, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("--resume with Redis back: %v: %s", err, errb.String())
	}
	done := map[string]bool{}
	for _, r := range append(results, parseResults(t, out2.String())...) {
		if r.Error == nil {
			done[r.ID] = true
		}
	}
	if len(done) != n {
		t.Errorf("%d lines answered after --resume, want %d", len(done), n)
	}
	for p, k := range answeredPrompts(t, srv) {
		if k > 1 {
			t.Errorf("the API answered %q %d times, want once", p, k)
		}
	}
}

// A --store that cannot be used is said at once, exit 2, nothing sent:
// rediss:// to a server without TLS says so within seconds (not a
// handshake timeout), a password is never quoted, not even a piece of one
// that does not parse, and a budget whose ledger key is not a stream is
// refused before anything is written.
func TestRedisStoreRefused(t *testing.T) {
	t.Parallel() // processes of their own: nothing of this one is shared
	rs := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	if err := rc.Set(context.Background(), "{gptbatch:wrongtype}:ledger", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url string
		args      []string
		want      string
	}{
		{"rediss to a server without TLS", "rediss://" + rs.Addr + "/0", nil, "expected TLS"},
		{"password that does not parse", "redis://:pa%ss@" + rs.Addr + "/0", nil, "percent-encoded"},
		{"ledger of the wrong type", rs.URL(""), []string{"--store-name", "wrongtype"}, "{gptbatch:wrongtype}:ledger is a string, not a stream"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			var errb bytes.Buffer
			cmd := host(t, tt.url, srv.URL(), prompts(3), tt.args...)
			cmd.Stdout, cmd.Stderr = new(bytes.Buffer), &errb
			start := time.Now()
			_ = cmd.Run()
			took, msg := time.Since(start), errb.String()
			if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(msg, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, msg, tt.want)
			}
			// It fails at once (well under a second idle); the bound is
			// loose enough for a busy machine and still catches a store
			// that retries a connection it can never make.
			if took > 30*time.Second {
				t.Errorf("took %v to fail, want it to fail without retrying", took.Round(time.Millisecond))
			}
			if strings.Contains(msg, "pa%") || strings.Contains(msg, "%ss") {
				t.Errorf("stderr %q quotes the password", msg)
			}
			if n := srv.Stats().Requests; n != 0 {
				t.Errorf("the API got %d requests, want none", n)
			}
		})
	}
	if v, err := rc.Get(context.Background(), "{gptbatch:wrongtype}:ledger").Result(); err != nil || v != "not a stream" {
		t.Errorf("the ledger key of the wrong type = %q, %v; want it left as it was", v, err)
	}
}

// The reports on a Redis store say which budget they show, say that an
// empty store has counted nothing yet, and keep --json's keys snake_case.
func TestRedisReports(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.args = append(g.args, "--store", rs.URL(""), "--store-name", "team-a")
	ctx := context.Background()

	out, stderr, code := g.run(ctx, "", "usage")
	if code != 0 || strings.Contains(out, "date ;") || !strings.Contains(out, "shared state: none yet") {
		t.Errorf("usage on an empty Redis: exit %d, %q, %s; want it said that nothing is counted yet", code, out, stderr)
	}

	out, stderr, code = g.run(ctx, "", "limits", "set", "--rpm", "100")
	if code != 0 || !strings.Contains(out, `(budget "team-a")`) {
		t.Errorf("limits set with --store-name team-a: exit %d, %q, %s; want the budget named", code, out, stderr)
	}
	out, _, _ = g.run(ctx, "", "limits")
	if !strings.Contains(out, `(budget "team-a")`) {
		t.Errorf("limits with --store-name team-a = %q; want the budget named", out)
	}
	out, _, _ = g.run(ctx, "", "limits", "--json")
	var l struct {
		Budget string `json:"budget"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || l.Budget != "team-a" {
		t.Errorf("limits --json with --store-name team-a: budget %q (%v); want team-a: %s", l.Budget, err, out)
	}

	if _, stderr, code := g.loud().run(ctx, prompts(1)); code != 0 || !strings.Contains(stderr, "gptbatch: 1 line: 1 succeeded") {
		t.Errorf("one line: exit %d, summary %q; want \"1 line: 1 succeeded\"", code, stderr)
	}
	out, _, _ = g.run(ctx, "", "usage", "--json")
	var rep struct {
		Limits map[string]any `json:"limits"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("usage --json: %v: %s", err, out)
	}
	for k := range rep.Limits {
		if k != strings.ToLower(k) {
			t.Errorf("usage --json: key limits.%s is not snake_case: %s", k, out)
		}
	}
	if rep.Limits["date"] == nil {
		t.Errorf("usage --json: no limits.date: %s", out)
	}
}
