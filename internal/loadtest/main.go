// Command loadtest measures gptbatch against a local fake of the API: how
// close it runs to the rate limits, its peak memory and its CPU per request.
// It builds the real binary, serves internal/openaitest on 127.0.0.1 and runs
// the binary as a user would, several copies at once where the scenario
// says so.
//
//	go run ./internal/loadtest              # every scenario
//	go run ./internal/loadtest -run pace    # scenarios whose name contains "pace"
//	go run ./internal/loadtest -run redis   # the budget shared through Redis
//	go run ./internal/loadtest -run cache   # --cache: the run that fills it, the run again
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/redistest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// scenario is one measured run.
type scenario struct {
	name   string
	server openaitest.Config
	procs  int      // copies of gptbatch at once, sharing one usage file
	lines  int      // prompts per copy
	prompt string   // each line's prompt, %d replaced by its number
	args   []string // gptbatch flags
	ideal  func() time.Duration
	// idealToks is the ideal time given the batch's estimated tokens.
	idealToks func(tokens int64) time.Duration
	goals     []goal
	dropOut   bool // discard stdout instead of keeping it
	dry       bool // a dry run: count lines, not requests
	// redis shares the budget through one redis-server (--store) instead
	// of a usage file: each copy has a usage path of its own, as on hosts
	// of their own. cluster makes it a 3-master Redis Cluster, named by
	// one node.
	redis, cluster bool
	// note, if set, is a figure worked out from the measure, printed
	// after it (an extrapolation, say).
	note func(m measure) string
	// collect reads the figures of --via batch's collection from its
	// --verbose stderr.
	collect bool
	// finishAt, if set, answers every batch at once when that many have
	// been created (the fake set to BatchManual), so that the fake is idle
	// while gptbatch collects.
	finishAt int
	// cache gives each copy --cache=FILE, a file of the scenario's made
	// afresh; warm runs the scenario once first, unmeasured, so that what
	// is measured is a run again.
	cache, warm bool
}

// goal is a pass/fail figure.
type goal struct {
	what string
	ok   func(m measure) bool
}

// measure is what a scenario produced.
type measure struct {
	wall      time.Duration
	ideal     time.Duration
	startup   time.Duration // from start to the server's first request
	requests  int
	limited   int
	lateLimit int   // 429s more than two seconds after the first request
	peakRSS   int64 // bytes, the largest of the copies
	cpu       time.Duration
	results   int
	exitCodes []int
	// usageRequests is what `gptbatch usage --today --json --store` on
	// another host reports (redis scenarios).
	usageRequests int
	// --via batch: results collected from output files and the seconds
	// collecting took (download, parse, spool, settle), from the
	// "batch collected" lines of --verbose.
	collected   int
	collectSecs float64
}

// collectRate is results collected a second.
func (m measure) collectRate() float64 {
	if m.collectSecs == 0 {
		return 0
	}
	return float64(m.collected) / m.collectSecs
}

// linesPerSec is results written a second.
func (m measure) linesPerSec() float64 {
	return float64(m.results) / m.wall.Seconds()
}

func (m measure) cpuPerReq() time.Duration {
	if m.requests == 0 {
		return 0
	}
	return m.cpu / time.Duration(m.requests)
}

func scenarios() []scenario {
	lat := 200 * time.Millisecond
	noLimits := []string{"--rpm", "0", "--tpm", "0", "--tpd", "0", "--batch-tokens", "0"}
	paceGoals := []goal{
		{"utilisation >= 0.98 (time <= 1.02 x ideal)", func(m measure) bool { return m.wall <= m.ideal*102/100 }},
		{"zero 429s", func(m measure) bool { return m.limited == 0 }},
	}
	perSecondGoals := []goal{
		{"time <= 1.15 x the server's own pace", func(m measure) bool { return m.wall <= m.ideal*115/100 }},
		{"at most 10 429s after the first 2 s", func(m measure) bool { return m.lateLimit <= 10 }},
	}
	return []scenario{
		{
			name:   "pace-rpm: 900 requests, rpm 600 (server and gptbatch), 200 ms latency",
			server: openaitest.Config{RPM: 600, Latency: lat},
			procs:  1, lines: 900, prompt: "say %d",
			args:  []string{"--rpm", "600", "--tpm", "0", "--parallel", "64", "--batch-tokens", "0"},
			ideal: func() time.Duration { return 30*time.Second + lat },
			goals: paceGoals,
		},
		{
			// The ideal comes from the batch's own estimate (a dry run):
			// prompt tokens plus the 100-token output cap of every line.
			name:   "pace-tpm: 450 requests, tpm 30000 (server and gptbatch), 200 ms latency",
			server: openaitest.Config{TPM: 30000, Latency: lat},
			procs:  1, lines: 450, prompt: "count to %d",
			args: []string{"--rpm", "0", "--tpm", "30000", "--max-tokens", "100", "--parallel", "64", "--batch-tokens", "0"},
			idealToks: func(tokens int64) time.Duration {
				return time.Duration(float64(tokens-30000)*60/30000*float64(time.Second)) + lat
			},
			goals: paceGoals,
		},
		{
			name:   "pace-shared: 4 copies x 200 requests, rpm 600 shared through one usage.md, 200 ms latency",
			server: openaitest.Config{RPM: 600, Latency: lat},
			procs:  4, lines: 200, prompt: "say %d",
			args:  []string{"--rpm", "600", "--tpm", "0", "--parallel", "64", "--batch-tokens", "0"},
			ideal: func() time.Duration { return 20*time.Second + lat },
			goals: paceGoals,
		},
		{
			// The server enforces its minute limit as 10 a second (fixed
			// one-second windows) and gptbatch is told 100 times too much:
			// it has to learn both the limit and that it is per second.
			name:   "pace-per-second-rpm: 200 requests, server rpm 600 enforced per second, gptbatch told --rpm 60000, 200 ms latency",
			server: openaitest.Config{RPM: 600, Window: time.Second, Latency: lat},
			procs:  1, lines: 200, prompt: "say %d",
			args:  []string{"--rpm", "60000", "--tpm", "0", "--parallel", "64", "--batch-tokens", "0"},
			ideal: func() time.Duration { return 20*time.Second - time.Second + lat },
			goals: perSecondGoals,
		},
		{
			// Likewise for tokens: 1000 a second, requests of about 60.
			name:   "pace-per-second-tpm: 200 requests of ~60 tokens, server tpm 60000 enforced per second, gptbatch told --tpm 6000000, 200 ms latency",
			server: openaitest.Config{TPM: 60000, Window: time.Second, Latency: lat},
			procs:  1, lines: 200, prompt: "count to %d",
			args: []string{"--rpm", "0", "--tpm", "6000000", "--max-tokens", "50", "--parallel", "64", "--batch-tokens", "0"},
			idealToks: func(tokens int64) time.Duration {
				return time.Duration(float64(tokens-1000)/1000*float64(time.Second)) + lat
			},
			goals: perSecondGoals,
		},
		{
			name:   "pace-redis: 4 hosts x 200 requests, rpm 600 shared through one Redis (no shared file), 200 ms latency",
			server: openaitest.Config{RPM: 600, Latency: lat},
			procs:  4, lines: 200, prompt: "say %d",
			args:  []string{"--rpm", "600", "--tpm", "0", "--parallel", "64", "--batch-tokens", "0"},
			ideal: func() time.Duration { return 20*time.Second + lat },
			redis: true,
			goals: append([]goal{
				{"time <= 1.2 x ideal", func(m measure) bool { return m.wall <= m.ideal*12/10 }},
				{"800 results", func(m measure) bool { return m.results == 800 }},
				{"usage --today --json --store on a fifth host reports 800 requests", func(m measure) bool { return m.usageRequests == 800 }},
			}, paceGoals...),
		},
		{
			name:   "pace-redis-cluster: 4 hosts x 200 requests, rpm 600 shared through a 3-master Redis Cluster named by one node, 200 ms latency",
			server: openaitest.Config{RPM: 600, Latency: lat},
			procs:  4, lines: 200, prompt: "say %d",
			args:  []string{"--rpm", "600", "--tpm", "0", "--parallel", "64", "--batch-tokens", "0"},
			ideal: func() time.Duration { return 20*time.Second + lat },
			redis: true, cluster: true,
			goals: append([]goal{
				{"time <= 1.2 x ideal", func(m measure) bool { return m.wall <= m.ideal*12/10 }},
				{"800 results", func(m measure) bool { return m.results == 800 }},
				{"usage --today --json --store on a fifth host reports 800 requests", func(m measure) bool { return m.usageRequests == 800 }},
			}, paceGoals...),
		},
		{
			// 10,000 lines one a request would take (10000-600)/10 s at
			// rpm 600: this measures a sample of 1,200 (the bucket's 600,
			// then 600 at the limit's pace) and extrapolates.
			name:   "embed-unpacked: 1200-line sample of 10000 single-input embeddings lines, rpm 600 (server and gptbatch), 200 ms latency",
			server: openaitest.Config{RPM: 600, Latency: lat},
			procs:  1, lines: 1200, prompt: "document %d: a short text to embed",
			args:  []string{"--endpoint", "embeddings", "--rpm", "600", "--tpm", "0", "--parallel", "64", "--batch-tokens", "0"},
			ideal: func() time.Duration { return 60*time.Second + lat },
			goals: paceGoals,
			note: func(m measure) string {
				// The first 600 go at once (the bucket is full); the rest
				// at the measured pace.
				paced := (m.wall - lat).Seconds() / (1200 - 600)
				return fmt.Sprintf("extrapolated to 10000 lines: %.0f s (%.1f ms a line after the first 600)", paced*(10000-600)+lat.Seconds(), paced*1000)
			},
		},
		{
			name:   "embed-pack: 10000 single-input embeddings lines, --pack 100 (--parallel 16, the default), rpm 600 (server and gptbatch), 200 ms latency",
			server: openaitest.Config{RPM: 600, Latency: lat},
			procs:  1, lines: 10000, prompt: "document %d: a short text to embed",
			args:    []string{"--endpoint", "embeddings", "--pack", "100", "--rpm", "600", "--tpm", "0", "--batch-tokens", "0"},
			dropOut: true,
			goals: []goal{
				{"10000 results", func(m measure) bool { return m.results == 10000 }},
				{"at most 110 requests (100 full packs, a few partial)", func(m measure) bool { return m.requests <= 110 }},
				{"zero 429s", func(m measure) bool { return m.limited == 0 }},
			},
		},
		{
			name:  "memory-dry: 200000 lines, --dry-run --batch-tokens 0",
			procs: 1, lines: 200000, prompt: "tell me about the number %d in one short sentence",
			args:    []string{"--dry-run", "--batch-tokens", "0"},
			dropOut: true,
			dry:     true,
			goals:   []goal{{"peak RSS <= 128 MB", func(m measure) bool { return m.peakRSS <= 128<<20 }}},
		},
		{
			name:  "memory-real: 200000 lines against an instant server, ordered",
			procs: 1, lines: 200000, prompt: "tell me about the number %d in one short sentence",
			args:    append([]string{"--parallel", "64"}, noLimits...),
			dropOut: true,
			goals:   []goal{{"peak RSS <= 128 MB", func(m measure) bool { return m.peakRSS <= 128<<20 }}},
		},
		{
			name:  "memory-real: 200000 lines against an instant server, --unordered",
			procs: 1, lines: 200000, prompt: "tell me about the number %d in one short sentence",
			args:    append([]string{"--parallel", "64", "--unordered"}, noLimits...),
			dropOut: true,
			goals:   []goal{{"peak RSS <= 128 MB", func(m measure) bool { return m.peakRSS <= 128<<20 }}},
		},
		{
			// The fake answers the four batches once all are created,
			// so that collecting is measured with the fake idle but for
			// serving the files.
			name:     "batch: 200000 lines through the fake's Batch API (--via batch), ordered",
			server:   openaitest.Config{Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}},
			finishAt: 4,
			procs:    1, lines: 200000, prompt: "tell me about the number %d in one short sentence",
			args:    append([]string{"--via", "batch", "--verbose"}, noLimits...),
			dropOut: true,
			collect: true,
			goals: []goal{
				{"peak RSS <= 128 MB", func(m measure) bool { return m.peakRSS <= 128<<20 }},
				{"collection >= 50000 results/s", func(m measure) bool { return m.collectRate() >= 50000 }},
			},
		},
		{
			// The run that fills the cache, for the ratio to the run again
			// below and to memory-real: the same lines, stored as answered.
			name:  "cache-fill: 200000 lines against an instant server, --cache (a new file), ordered",
			procs: 1, lines: 200000, prompt: "tell me about the number %d in one short sentence",
			args:    append([]string{"--parallel", "64"}, noLimits...),
			dropOut: true,
			cache:   true,
			goals:   []goal{{"peak RSS <= 128 MB", func(m measure) bool { return m.peakRSS <= 128<<20 }}},
		},
		{
			name:  "cache-rerun: 200000 lines run again with --cache, every answer cached, ordered",
			procs: 1, lines: 200000, prompt: "tell me about the number %d in one short sentence",
			args:    append([]string{"--parallel", "64"}, noLimits...),
			dropOut: true,
			cache:   true, warm: true,
			goals: []goal{
				{"0 requests", func(m measure) bool { return m.requests == 0 }},
				{"200000 results", func(m measure) bool { return m.results == 200000 }},
				{">= 30000 lines/s", func(m measure) bool { return m.linesPerSec() >= 30000 }},
				{"peak RSS <= 128 MB", func(m measure) bool { return m.peakRSS <= 128<<20 }},
			},
		},
		{
			name:  "cpu: 20000 requests against an instant server, --parallel 64",
			procs: 1, lines: 20000, prompt: "tell me about the number %d in one short sentence",
			args:    append([]string{"--parallel", "64"}, noLimits...),
			dropOut: true,
			goals:   []goal{{"CPU <= 300 us per request", func(m measure) bool { return m.cpuPerReq() <= 300*time.Microsecond }}},
		},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	only := fs.String("run", "", "run only scenarios whose name contains this")
	bin := fs.String("bin", "", "gptbatch binary to measure (default: build it)")
	serve := fs.String("serve", "", "only serve the fake API on this loopback address, to try gptbatch by hand")
	latency := fs.Duration("latency", 200*time.Millisecond, "with -serve: latency of each answer")
	rpm := fs.Int("rpm", 0, "with -serve: requests per minute the fake allows (0 = no limit)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *serve != "" {
		return serveFake(*serve, openaitest.Config{Latency: *latency, Jitter: *latency / 2, RPM: *rpm}, stderr)
	}
	dir, err := os.MkdirTemp("", "gptbatch-load-")
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin == "" {
		*bin = filepath.Join(dir, "gptbatch")
		build := exec.Command("go", "build", "-o", *bin, ".")
		build.Dir = moduleRoot()
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(stderr, "loadtest: build:", err)
			return 1
		}
	}
	failed := 0
	for _, b := range benches() {
		if !strings.Contains(b.name, *only) {
			continue
		}
		fmt.Fprintf(stdout, "%s\n", b.name)
		n, err := b.run(stdout)
		if err != nil {
			fmt.Fprintf(stdout, "  error: %v\n", err)
			n++
		}
		failed += n
	}
	for _, sc := range scenarios() {
		if !strings.Contains(sc.name, *only) {
			continue
		}
		m, err := sc.measure(*bin, dir)
		if err != nil {
			fmt.Fprintf(stdout, "%s\n  error: %v\n", sc.name, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s\n", sc.name)
		if m.ideal > 0 {
			fmt.Fprintf(stdout, "  time %.2fs, ideal %.2fs, utilisation %.3f\n", m.wall.Seconds(), m.ideal.Seconds(), m.ideal.Seconds()/m.wall.Seconds())
		} else {
			fmt.Fprintf(stdout, "  time %.2fs\n", m.wall.Seconds())
		}
		fmt.Fprintf(stdout, "  requests %d, 429s %d (%d after the first 2 s), results %d, exit %v, first request after %.2fs\n", m.requests, m.limited, m.lateLimit, m.results, m.exitCodes, m.startup.Seconds())
		fmt.Fprintf(stdout, "  peak RSS %.1f MB, CPU %.2fs = %d us/request\n", float64(m.peakRSS)/(1<<20), m.cpu.Seconds(), m.cpuPerReq().Microseconds())
		if sc.cache {
			fmt.Fprintf(stdout, "  %.0f lines/s, CPU %.1f us/line\n", m.linesPerSec(), float64(m.cpu.Microseconds())/float64(max(m.results, 1)))
		}
		if sc.note != nil {
			fmt.Fprintf(stdout, "  %s\n", sc.note(m))
		}
		if sc.collect {
			fmt.Fprintf(stdout, "  collected %d results in %.2fs: %.0f results/s\n", m.collected, m.collectSecs, m.collectRate())
		}
		for _, g := range sc.goals {
			verdict := "met"
			if !g.ok(m) {
				verdict = "MISSED"
				failed++
			}
			fmt.Fprintf(stdout, "  goal %s: %s\n", g.what, verdict)
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// measure runs the scenario's copies of bin at once against a fresh server.
func (sc scenario) measure(bin, dir string) (measure, error) {
	var m measure
	srv := openaitest.NewUnstarted(sc.server)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return m, err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer hs.Shutdown(context.Background())
	url := "http://" + ln.Addr().String() + "/v1"

	usage := filepath.Join(dir, strings.Fields(sc.name)[0]+".usage.md")
	os.Remove(usage)
	input := makeInput(sc.lines, sc.prompt)
	args := sc.args
	if sc.cache {
		file := filepath.Join(dir, strings.Fields(sc.name)[0]+".cache.db")
		for _, p := range []string{file, file + "-wal", file + "-shm"} {
			os.Remove(p)
		}
		args = append([]string{"--cache=" + file}, args...)
	}
	if sc.warm {
		cmd := exec.Command(bin, append([]string{"--base-url", url, "--usage-file", usage, "--quiet", "--progress", "never"}, args...)...)
		cmd.Env = append(os.Environ(), "OPENAI_API_KEY=sk-load-test")
		cmd.Stdin = bytes.NewReader(input)
		if out, err := cmd.CombinedOutput(); err != nil {
			return m, fmt.Errorf("the run before: %w: %s", err, lastLines(string(out), 5))
		}
	}
	warmed := srv.Stats().Requests
	var store []string
	switch {
	case sc.cluster:
		c, err := redistest.RunCluster()
		if err != nil {
			return m, fmt.Errorf("redis cluster: %w", err)
		}
		defer c.Kill()
		store = []string{"--store", c.URL()}
	case sc.redis:
		rs, err := redistest.Run()
		if err != nil {
			return m, fmt.Errorf("redis-server: %w", err)
		}
		defer rs.Kill()
		store = []string{"--store", rs.URL("")}
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	if sc.finishAt > 0 {
		done := make(chan struct{})
		defer close(done)
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for srv.BatchStats().Created < sc.finishAt {
				select {
				case <-t.C:
				case <-done:
					return
				}
			}
			srv.FinishBatches()
		}()
	}
	start := time.Now()
	for p := 0; p < sc.procs; p++ {
		usage := usage
		if sc.redis {
			usage = filepath.Join(dir, fmt.Sprintf("host%d.usage.md", p))
			os.Remove(usage)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(bin, append(append([]string{"--base-url", url, "--usage-file", usage, "--quiet", "--progress", "never"}, store...), args...)...)
			cmd.Env = append(os.Environ(), "OPENAI_API_KEY=sk-load-test")
			cmd.Stdin = bytes.NewReader(input)
			var out counter
			var errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Start(); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			// The peak RSS is read from /proc while the process runs: the
			// rusage figure would include the harness's own memory, which
			// the child shares between fork and exec.
			hwm := make(chan int64)
			stop := make(chan struct{})
			go func() { hwm <- watchHWM(cmd.Process.Pid, stop) }()
			err := cmd.Wait()
			close(stop)
			peak := <-hwm
			mu.Lock()
			defer mu.Unlock()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				firstErr = err
				return
			}
			code := cmd.ProcessState.ExitCode()
			m.exitCodes = append(m.exitCodes, code)
			if code != 0 && firstErr == nil {
				firstErr = fmt.Errorf("gptbatch exited %d: %s", code, lastLines(errb.String(), 5))
			}
			m.results += out.lines
			m.peakRSS = max(m.peakRSS, peak)
			if sc.collect {
				n, secs := collectFigures(errb.String())
				m.collected += n
				m.collectSecs += secs
			}
			m.cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}()
	}
	wg.Wait()
	m.wall = time.Since(start)
	st := srv.Stats()
	m.requests, m.limited = st.Requests-warmed, st.RateLimited
	if !st.First.IsZero() && m.requests > 0 { // the run before (warm) made any earlier ones
		m.startup = st.First.Sub(start)
		for _, r := range srv.Requests() {
			if r.Status == http.StatusTooManyRequests && r.At.Sub(st.First) > 2*time.Second {
				m.lateLimit++
			}
		}
	}
	if sc.dry {
		m.requests = sc.lines * sc.procs // per line: a dry run sends nothing
	}
	if sc.redis {
		n, err := usageRequests(bin, filepath.Join(dir, "host-usage.md"), store)
		if err != nil {
			return m, err
		}
		m.usageRequests = n
	}
	if sc.ideal != nil {
		m.ideal = sc.ideal()
	}
	if sc.idealToks != nil {
		tokens, err := estimate(bin, input, sc.args)
		if err != nil {
			return m, err
		}
		m.ideal = sc.idealToks(tokens)
	}
	return m, firstErr
}

// usageRequests is the requests `gptbatch usage --today --json` reports,
// on a host of its own (usage path) with the store args.
func usageRequests(bin, usage string, store []string) (int, error) {
	cmd := exec.Command(bin, append([]string{"usage", "--today", "--json", "--usage-file", usage}, store...)...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("usage: %w: %s", err, errb.String())
	}
	var rep struct {
		Total struct {
			Requests int `json:"requests"`
		} `json:"total"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return 0, fmt.Errorf("usage --json: %w", err)
	}
	return rep.Total.Requests, nil
}

// serveFake serves the fake API on addr, which must be a loopback address,
// until the process is stopped.
func serveFake(addr string, cfg openaitest.Config, stderr io.Writer) int {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(stderr, "loadtest: -serve %s: give a loopback address such as 127.0.0.1:8787\n", addr)
		return 2
	}
	srv := openaitest.NewUnstarted(cfg)
	fmt.Fprintf(stderr, "fake API on http://%s/v1 (use --base-url http://%s/v1)\n", addr, addr)
	if err := http.ListenAndServe(addr, srv.Handler()); err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 1
	}
	return 0
}

// estimate is the tokens a batch reserves, from gptbatch's own dry run.
func estimate(bin string, input []byte, args []string) (int64, error) {
	cmd := exec.Command(bin, append(append([]string{}, args...), "--dry-run", "--quiet")...)
	cmd.Stdin = bytes.NewReader(input)
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("dry run: %w", err)
	}
	var total int64
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var e struct {
			PromptTokens    int64 `json:"prompt_tokens"`
			MaxOutputTokens int64 `json:"max_output_tokens"`
		}
		if err := dec.Decode(&e); err != nil {
			return 0, err
		}
		total += e.PromptTokens + e.MaxOutputTokens
	}
	return total, nil
}

// watchHWM polls the peak resident set (VmHWM) of a running process until
// stop, and returns the largest seen, in bytes.
func watchHWM(pid int, stop <-chan struct{}) int64 {
	var peak int64
	path := fmt.Sprintf("/proc/%d/status", pid)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				var kb int64
				if _, err := fmt.Sscanf(l, "VmHWM: %d kB", &kb); err == nil {
					peak = max(peak, kb*1024)
				}
			}
		}
		select {
		case <-t.C:
		case <-stop:
			return peak
		}
	}
}

// collectFigures adds up the "batch collected" lines of --verbose:
// results=N seconds=S.
func collectFigures(stderr string) (n int, secs float64) {
	for _, l := range strings.Split(stderr, "\n") {
		if !strings.Contains(l, "batch collected") {
			continue
		}
		var k int
		var s float64
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "results="); ok {
				fmt.Sscan(v, &k)
			}
			if v, ok := strings.CutPrefix(f, "seconds="); ok {
				fmt.Sscan(v, &s)
			}
		}
		n += k
		secs += s
	}
	return n, secs
}

// counter counts output lines without keeping them.
type counter struct{ lines int }

func (c *counter) Write(p []byte) (int, error) {
	c.lines += bytes.Count(p, []byte("\n"))
	return len(p), nil
}

func makeInput(n int, prompt string) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "%q\n", strings.ReplaceAll(prompt, "%d", fmt.Sprint(i)))
	}
	return b.Bytes()
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// moduleRoot is the directory holding go.mod.
func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
