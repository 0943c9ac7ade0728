package cli

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// modelName is the model for lines that name none: --model or
// $OPENAI_MODEL, else ./gpt_model_type.txt, else gpt-4o-mini; for
// --endpoint embeddings, text-embedding-3-small unless --model or
// $OPENAI_MODEL names one (the file names a chat model).
func (r *runCmd) modelName() string {
	if r.Model != "" {
		return r.Model
	}
	if r.Endpoint == jsonl.EndpointEmbeddings {
		return "text-embedding-3-small"
	}
	if m := firstLine(r.seams.path("gpt_model_type.txt")); m != "" {
		return m
	}
	return "gpt-4o-mini"
}

// usagePath is --usage-file, else the default.
func (r *runCmd) usagePath() (string, error) {
	if r.UsageFile != "" {
		return r.UsageFile, nil
	}
	return r.defaultUsageFile()
}

// apiKey finds the API key: --api-key-file, $OPENAI_API_KEY, then
// api_key.txt, .openai_key and .env in the working directory.
func (r *runCmd) apiKey() (string, error) {
	if file := r.APIKeyFile; file != "" {
		if _, err := os.Stat(file); err != nil {
			return "", fmt.Errorf("--api-key-file: cannot read %s: %w", file, errors.Unwrap(err))
		}
		k := firstLine(file)
		if k == "" {
			return "", fmt.Errorf("--api-key-file %s: no key in it", file)
		}
		return k, nil
	}
	if k := strings.TrimSpace(r.seams.getenv("OPENAI_API_KEY")); k != "" {
		return k, nil
	}
	for _, f := range []string{"api_key.txt", ".openai_key"} {
		if k := firstLine(r.seams.path(f)); k != "" {
			return k, nil
		}
	}
	if k := dotenv(r.seams.path(".env"), "OPENAI_API_KEY"); k != "" {
		return k, nil
	}
	return "", errors.New("no API key: set OPENAI_API_KEY, or put the key in ./api_key.txt, ./.openai_key or ./.env (OPENAI_API_KEY=...), or pass --api-key-file; --dry-run needs none")
}

// firstLine is the first non-blank line of a file, trimmed; "" if none.
func firstLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			return l
		}
	}
	return ""
}

// dotenv reads key from a .env file's KEY=value lines, as dotenv tools
// do: "export " before the key is allowed, a value may be quoted ('...'
// taken as it is, "..." with \" inside), and an unquoted value ends at
// " #", where a comment starts.
func dotenv(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "))
		k, v, ok := strings.Cut(l, "=")
		if ok && strings.TrimSpace(k) == key {
			return dotenvValue(strings.TrimSpace(v))
		}
	}
	return ""
}

// dotenvValue is the value of a .env line, its quotes or comment removed.
func dotenvValue(v string) string {
	if len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
		q := v[0]
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			switch {
			case v[i] == q:
				return b.String()
			case q == '"' && v[i] == '\\' && i+1 < len(v):
				i++
			}
			b.WriteByte(v[i])
		}
		return strings.TrimSpace(v[1:]) // no closing quote: keep what there is
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = v[:i]
	} else if i := strings.Index(v, "\t#"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// defaultUsageFile is $XDG_STATE_HOME/gptbatch/usage.md, else
// ~/.local/state/gptbatch/usage.md.
func (r *runCmd) defaultUsageFile() (string, error) {
	path, err := r.seams.xdgPath("XDG_STATE_HOME", filepath.Join(".local", "state"), filepath.Join("gptbatch", "usage.md"))
	if err != nil {
		return "", fmt.Errorf("no usage file: set --usage-file or GPTBATCH_USAGE_FILE: %w", err)
	}
	return path, nil
}

// Hints for an amount of dollars that rounds to nothing: what 0 does
// where it is allowed, and what to do instead where it is not.
const (
	zeroTurnsOff  = "0 turns the limit off"
	zeroIsNoLimit = "to remove a stored limit: gptbatch limits clear daily-cost"
)

// parseDollars reads a flag's amount of dollars (budget.ParseCost),
// refusing an amount that is not zero but rounds to nothing: a cap of less
// than a picodollar would otherwise mean "off". zero is the hint that
// refusal gives.
func parseDollars(flag, s, zero string) (budget.Cost, error) {
	c, err := budget.ParseCost(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", flag, err)
	}
	mantissa, _, _ := strings.Cut(strings.ToLower(s), "e")
	if c == 0 && strings.ContainsAny(mantissa, "123456789") {
		return 0, fmt.Errorf("%s %s: less than a picodollar ($0.000000000001), the smallest amount gptbatch counts; %s", flag, s, zero)
	}
	return c, nil
}

// checkBaseURL refuses to send the key in clear (http://) to a host other
// than this machine, unless insecure allows it.
func checkBaseURL(base string, insecure bool) error {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || insecure {
		return nil // other problems with the URL are said where it is used
	}
	host := u.Hostname()
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--base-url %s: the API key would cross the network in clear text (http://); use https://, or --allow-insecure if the network is yours", u.Redacted())
}

// dayZoneEnv is the environment variable that names the time zone whose
// midnight ends the day a gate starts (see budget.Gate.SetDayZone).
const dayZoneEnv = "GPTBATCH_DAY_TZ"

// dayZone is the time zone an IANA name such as "America/New_York" or
// "UTC" names, for Gate.SetDayZone; "" is nil, the process's own zone.
func dayZone(name string) (*time.Location, error) {
	if name == "" {
		return nil, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: not a time zone name such as America/New_York or UTC: %w", dayZoneEnv, name, err)
	}
	return loc, nil
}
