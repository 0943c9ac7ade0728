package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestInsecureBaseURL: the key goes over plain http:// only to
// this machine, unless --allow-insecure.
func TestInsecureBaseURL(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"http://example.com/v1", "http://10.0.0.7:8080/v1", "http://user:pw@api.example.org/v1"} {
		t.Run(url, func(t *testing.T) {
			g := newGB(t, url)
			_, stderr, code := g.run(context.Background(), prompts(1))
			if code != 2 || !strings.Contains(stderr, "--allow-insecure") || !strings.Contains(stderr, "clear text") {
				t.Errorf("exit status %d, stderr %q; want 2 and a word of --allow-insecure", code, stderr)
			}
			if strings.Contains(stderr, "pw@") {
				t.Errorf("stderr %q shows the URL's password", stderr)
			}
		})
	}
	tests := []struct {
		url      string
		insecure bool
		ok       bool
	}{
		{"http://127.0.0.1:8080/v1", false, true},
		{"http://127.9.0.1/v1", false, true},
		{"http://[::1]:8080/v1", false, true},
		{"http://localhost:11434/v1", false, true},
		{"http://ollama.localhost/v1", false, true},
		{"https://api.example.com/v1", false, true},
		{"http://example.com/v1", false, false},
		{"http://example.com/v1", true, true},
		{"http://localhost.example.com/v1", false, false},
	}
	for _, tt := range tests {
		if err := checkBaseURL(tt.url, tt.insecure); (err == nil) != tt.ok {
			t.Errorf("checkBaseURL(%q, %v) = %v, want ok %v", tt.url, tt.insecure, err, tt.ok)
		}
	}
}

// TestMaskedKeyRedacted: a 401 that quotes the key masked (first
// and last characters around stars) does not reach results, stderr or
// logs, whatever the key's prefix.
func TestMaskedKeyRedacted(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"gsk_wrong0123456789abcdefghijklmnopq", "AIzaWrong0123456789abcdefghijklm", "sk-proj-wrong0123456789abcdefghij"} {
		t.Run(key[:4], func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Key: "sk-the-right-key-000000000000"})
			defer srv.Close()
			g := newGB(t, srv.URL())
			g.setenv("OPENAI_API_KEY", key)
			out, stderr, code := g.run(context.Background(), prompts(2), "--verbose", "--parallel", "1")
			if code != 1 {
				t.Errorf("exit status %d, want 1; stderr: %s", code, stderr)
			}
			rs := parseResults(t, out)
			if len(rs) != 2 || rs[0].Error == nil || !strings.Contains(rs[0].Error.Message, "[redacted]") {
				t.Fatalf("results = %+v, want a 401 whose message says [redacted]", rs)
			}
			for _, leak := range []string{key[:5] + "*", "*" + key[len(key)-2:]} {
				if strings.Contains(out, leak) || strings.Contains(stderr, leak) {
					t.Errorf("output shows the masked key (%q):\n%s\n%s", leak, out, stderr)
				}
			}
		})
	}
}

// TestParserReused: a Run parses its arguments as it would in a process of
// its own, whatever the Runs before it parsed with the same parser (Run
// keeps parsers for the Runs to come): flags given before are neither
// still given (--today then --month is no conflict) nor negated, and the
// environment still gives what the command line leaves unset.
func TestParserReused(t *testing.T) {
	t.Parallel()
	env := map[string]string{"OPENAI_MODEL": "gpt-4.1-mini", "GPTBATCH_CACHE": "on"}
	lines := [][]string{
		{"usage", "--today"},
		{"usage", "--month", "--json"},
		{"usage", "--today", "--month"},
		{"--no-cache", "--dry-run", "-m", "gpt-4o"},
		{"--dry-run", "--parallel", "3"},
		{"--on-limit", "never"},
		{"limits", "set", "--daily-cost", "5"},
		{"limits", "--json"},
		{"prices", "load", "prices.json"},
		{"--help"},
		{"usage", "--help"},
		{"--version"},
	}
	// parse is args parsed by p: what --help and errors said, the exit
	// status asked for, the command and the flags' values.
	parse := func(p *parser, args []string) string {
		t.Helper()
		var out, errb bytes.Buffer
		p.c = cli{runCmd: runCmd{seams: Seams{Dir: "/work", Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}}}
		kctx, err := p.parse(args, &out, &errb)
		cmd := ""
		if kctx != nil {
			cmd = kctx.Command()
		}
		c := p.c
		c.seams = Seams{}
		return fmt.Sprintf("%s|%s|%v|%d|%s|%+v", out.String(), errb.String(), err, p.exited, cmd, c)
	}
	fresh := func() *parser {
		t.Helper()
		p, err := buildParser()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, b := range lines {
		want := parse(fresh(), b)
		p := fresh()
		for _, a := range lines {
			parse(p, a)
			if got := parse(p, b); got != want {
				t.Errorf("parse(%q) after parse(%q) = %s\nwant, as by a new parser: %s", b, a, got, want)
			}
		}
	}
}

// TestEmptyEnvIsUnset: VAR= is no value: the defaults hold.
func TestEmptyEnvIsUnset(t *testing.T) {
	t.Parallel()
	env := map[string]string{"OPENAI_BASE_URL": "", "OPENAI_MODEL": "", "GPTBATCH_USAGE_FILE": ""}
	parse := func() cli {
		t.Helper()
		c := cli{runCmd: runCmd{seams: Seams{Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}}}
		p, err := newParser(&c, &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse(nil); err != nil {
			t.Fatalf("Parse: %v", err)
		}
		return c
	}
	if c := parse(); c.BaseURL != "https://api.openai.com/v1" || c.Model != "" || c.UsageFile != "" {
		t.Errorf("with empty variables: --base-url %q, --model %q, --usage-file %q; want the default URL and no model or usage file", c.BaseURL, c.Model, c.UsageFile)
	}
	env["OPENAI_MODEL"] = "gpt-4.1-mini"
	if c := parse(); c.Model != "gpt-4.1-mini" {
		t.Errorf("OPENAI_MODEL=gpt-4.1-mini: --model %q, want it", c.Model)
	}
}

// TestAPIKeyFile: a missing --api-key-file says it cannot be
// read; a .env value loses its inline comment and quotes.
func TestAPIKeyFile(t *testing.T) {
	t.Parallel()
	g := newGB(t, "http://127.0.0.1:1/v1")
	_, stderr, code := g.run(context.Background(), prompts(1), "--api-key-file", filepath.Join(g.dir, "nokey.txt"))
	if code != 2 || !strings.Contains(stderr, "cannot read") || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing --api-key-file: exit status %d, stderr %q; want 2 and cannot read: no such file", code, stderr)
	}
	tests := []struct{ in, want string }{
		{"sk-abc # my key", "sk-abc"},
		{"sk-abc\t# my key", "sk-abc"},
		{"sk-abc#not-a-comment", "sk-abc#not-a-comment"},
		{`"sk-abc" # quoted`, "sk-abc"},
		{`'sk-a#bc'  # single`, "sk-a#bc"},
		{`"sk-a\"bc"`, `sk-a"bc`},
		{"sk-abc", "sk-abc"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := dotenvValue(tt.in); got != tt.want {
			t.Errorf("dotenvValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	srv := openaitest.New(openaitest.Config{Key: "sk-from-dotenv-123456"})
	defer srv.Close()
	g = newGB(t, srv.URL())
	g.setenv("OPENAI_API_KEY", "")
	os.WriteFile(filepath.Join(g.dir, ".env"), []byte("OPENAI_API_KEY=sk-from-dotenv-123456 # the team's key\n"), 0o600)
	if _, stderr, code := g.run(context.Background(), prompts(1)); code != 0 {
		t.Errorf(".env with an inline comment: exit status %d: %s", code, stderr)
	}
}

// TestFlagValues (items 27, 28): values that would mean something else
// than they say are refused, nothing sent.
func TestFlagValues(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	// Each error says what is wrong and what the user can do instead; a
	// hint must not offer what the command refuses ("0 turns the limit
	// off" where a stored limit of 0 is refused).
	tests := []struct {
		args      []string
		want, not string
	}{
		{[]string{"--timeout=-1s"}, "--timeout cannot be negative", ""},
		{[]string{"--max-cost", "1e-13"}, "less than a picodollar ($0.000000000001), the smallest amount gptbatch counts; 0 turns the limit off", ""},
		{[]string{"--daily-cost", "0.0000000000004"}, "less than a picodollar", ""},
		{[]string{"limits", "set", "--daily-cost", "0.0000000000004"}, "less than a picodollar ($0.000000000001), the smallest amount gptbatch counts; to remove a stored limit: gptbatch limits clear daily-cost", "turns the limit off"},
		{[]string{"usage", "--limit", "1e-13"}, "gptbatch limits clear daily-cost", "turns the limit off"},
		{[]string{"--max-cost=0x10"}, "not an amount of dollars", ""},
		{[]string{"--max-cost", "1e30"}, "too large", ""},
		{[]string{"--tpd", "1000000000000000000"}, "more than", ""},
		{[]string{"--max-tokens", "9223372036854775807"}, "more than", ""},
		{[]string{"--retries", "1000000"}, "more than 1000", ""},
		{[]string{"--warn-at", "120"}, "--warn-at is a percentage from 0 to 100 (0: warn only when a day's limit is reached), not 120", "(off)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, code := g.run(context.Background(), prompts(1), tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) || (tt.not != "" && strings.Contains(stderr, tt.not)) {
				t.Errorf("exit status %d, stderr %q; want 2 and %q, without %q", code, stderr, tt.want, tt.not)
			}
		})
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
	if _, stderr, code := g.run(context.Background(), prompts(1), "--max-cost", "0e5", "--timeout", "0"); code != 0 {
		t.Errorf("--max-cost 0e5 --timeout 0 (off): exit status %d: %s", code, stderr)
	}
}

// TestQuietWarnings: warnings are "gptbatch: warning: ...",
// like errors, and --quiet silences them.
func TestQuietWarnings(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	_, stderr, code := g.run(context.Background(), prompts(2), "--model", "my-local-llama")
	if code != 0 || stderr != "" {
		t.Errorf("--quiet: exit status %d, stderr %q; want 0 and nothing", code, stderr)
	}
	_, stderr, _ = g.loud().run(context.Background(), prompts(2), "--model", "my-local-llama")
	if !strings.HasPrefix(stderr, `gptbatch: warning: no price known for model "my-local-llama"`) {
		t.Errorf("stderr = %q, want it to start with gptbatch: warning:", stderr)
	}
}

// TestVersion: --version says the module version a go install
// build records, or the commit, rather than "dev".
func TestVersion(t *testing.T) {
	t.Parallel()
	bi := func(v string, settings ...debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Version: v}, Settings: settings}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	tests := []struct {
		set  string
		bi   *debug.BuildInfo
		want string
	}{
		{"v1.0.0", bi("v0.9.0"), "v1.0.0"},
		{"dev", bi("v1.2.3"), "v1.2.3"},
		{"dev", bi("(devel)", rev, dirty), "dev (0123456789ab, modified)"},
		{"dev", bi("(devel)", rev), "dev (0123456789ab)"},
		{"dev", bi("(devel)"), "dev"},
	}
	for _, tt := range tests {
		if got := versionOf(tt.set, tt.bi, true); got != tt.want {
			t.Errorf("versionOf(%q, %s) = %q, want %q", tt.set, tt.bi.Main.Version, got, tt.want)
		}
	}
	var out strings.Builder
	if code := run(context.Background(), []string{"--version"}, strings.NewReader(""), &out, &out); code != 0 || strings.TrimSpace(out.String()) != buildVersion() {
		t.Errorf("--version = %q (exit %d), want %q", out.String(), code, buildVersion())
	}
}

// TestHelpPriceDate: --help says the date of the price table.
func TestHelpPriceDate(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &out)
	if !strings.Contains(out.String(), budget.PriceTableDate) {
		t.Errorf("--help does not give the price table's date %s", budget.PriceTableDate)
	}
}

// TestHelpNamesEveryFlag: --help lists every flag of the contract, its
// environment variable, and the three examples.
func TestHelpNamesEveryFlag(t *testing.T) {
	t.Parallel()
	var out, errb strings.Builder
	if code := run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("--help: exit status %d: %s", code, errb.String())
	}
	help := out.String()
	var flags []string
	rt := reflect.TypeOf(runCmd{})
	for i := 0; i < rt.NumField(); i++ {
		if f := rt.Field(i); f.IsExported() {
			name := f.Tag.Get("name")
			if name == "" {
				name = kebab(f.Name)
			}
			flags = append(flags, "--"+name)
		}
	}
	flags = append(flags, "--version", "$OPENAI_MODEL", "$OPENAI_BASE_URL", "$GPTBATCH_USAGE_FILE", "$OPENAI_API_KEY", "jq ", "xargs ", "cron")
	for _, f := range flags {
		if !strings.Contains(help, f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

func kebab(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('-')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestNoKey: without a key, exit 2 and say where a key is looked for.
func TestNoKey(t *testing.T) {
	t.Parallel()
	g := newGB(t, "http://127.0.0.1:1/v1")
	g.setenv("OPENAI_API_KEY", "")
	_, stderr, code := g.run(context.Background(), prompts(1))
	if code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	for _, where := range []string{"OPENAI_API_KEY", "api_key.txt", ".openai_key", ".env", "--api-key-file"} {
		if !strings.Contains(stderr, where) {
			t.Errorf("stderr %q does not mention %s", stderr, where)
		}
	}
}

// TestConfigFiles: the model from gpt_model_type.txt and the key from .env
// in the working directory.
func TestConfigFiles(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Key: "sk-from-dotenv-123456"})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.setenv("OPENAI_API_KEY", "")
	os.WriteFile(filepath.Join(g.dir, "gpt_model_type.txt"), []byte("gpt-4.1-mini\n"), 0o600)
	os.WriteFile(filepath.Join(g.dir, ".env"), []byte("# keys\nexport OPENAI_API_KEY=\"sk-from-dotenv-123456\"\n"), 0o600)
	out, stderr, code := g.run(context.Background(), prompts(1))
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	if rs := parseResults(t, out); rs[0].Model != "gpt-4.1-mini-2025-04-14" {
		t.Errorf("model = %q, want gpt-4.1-mini from gpt_model_type.txt", rs[0].Model)
	}
}

// TestDocsNameEveryFlag: every flag and environment variable of every
// command is documented in docs/, and --help ends by saying where the
// docs are.
func TestDocsNameEveryFlag(t *testing.T) {
	t.Parallel()
	var docs strings.Builder
	files, err := filepath.Glob(filepath.Join(mustGetwdAtStart, "..", "..", "docs", "*.md"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(b)
	}
	var c cli
	parser, err := newParser(&c, io.Discard, io.Discard, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if f.Hidden {
				continue
			}
			checked++
			if !strings.Contains(docs.String(), "--"+f.Name) {
				t.Errorf("--%s (%s) is not documented in docs/", f.Name, n.FullPath())
			}
			for _, env := range f.Tag.Envs {
				if !strings.Contains(docs.String(), env) {
					t.Errorf("$%s (--%s) is not documented in docs/", env, f.Name)
				}
			}
		}
		for _, child := range n.Children {
			walk(child)
		}
	}
	walk(parser.Model.Node)
	if checked < 40 {
		t.Fatalf("checked %d flags: the walk of the command line missed most of them", checked)
	}

	var out strings.Builder
	run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, io.Discard)
	if last := strings.TrimSpace(out.String()); !strings.HasSuffix(last, docsURL) {
		t.Errorf("--help ends with %q, want where the docs are (%s)", last[max(0, len(last)-80):], docsURL)
	}
}

// dayZone reads GPTBATCH_DAY_TZ: an IANA name, "" for the process's own
// zone; an error names the variable.
func TestDayZoneName(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		want *time.Location
		err  bool
	}{
		{"", nil, false},
		{"America/New_York", ny, false},
		{"UTC", time.UTC, false},
		{"Mars/Olympus", nil, true},
	} {
		loc, err := dayZone(tt.name)
		if (err != nil) != tt.err || (err == nil && loc.String() != tt.want.String()) {
			t.Errorf("dayZone(%q) = %v, %v; want %v, error %v", tt.name, loc, err, tt.want, tt.err)
		}
		if err != nil && !strings.Contains(err.Error(), dayZoneEnv) {
			t.Errorf("dayZone(%q) error %q does not name %s", tt.name, err, dayZoneEnv)
		}
	}
}

// limitSource says where each limit in force comes from.
func TestLimitSource(t *testing.T) {
	t.Parallel()
	src := limitSource(budget.Limits{RPM: 500, TPM: 10, DailyCost: 10 * budget.Dollar}, budget.Limits{RPM: 100, TPM: 20, DailyCost: budget.Dollar})
	want := map[string]string{"rpm": "stored", "tpm": "flag", "tpd": "off", "daily-cost": "stored"}
	for k, v := range want {
		if src[k] != v {
			t.Errorf("limitSource[%s] = %q, want %q", k, src[k], v)
		}
	}
}
