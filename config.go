package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// modelName is the model for lines that name none: --model or
// $OPENAI_MODEL, else ./gpt_model_type.txt, else gpt-4o-mini; for
// --endpoint embeddings, text-embedding-3-small unless --model or
// $OPENAI_MODEL names one (the file names a chat model).
func modelName(flag, endpoint string) string {
	if flag != "" {
		return flag
	}
	if endpoint == jsonl.EndpointEmbeddings {
		return "text-embedding-3-small"
	}
	if m := firstLine("gpt_model_type.txt"); m != "" {
		return m
	}
	return "gpt-4o-mini"
}

// usagePath is --usage-file, else the default.
func (r *runCmd) usagePath() (string, error) {
	if r.UsageFile != "" {
		return r.UsageFile, nil
	}
	return defaultUsageFile()
}

// openStore opens the usage file.
func (r *runCmd) openStore() (*budget.FileStore, error) {
	path, err := r.usagePath()
	if err != nil {
		return nil, err
	}
	return budget.OpenFile(path)
}

// usedToday is the usage file's state, if it has one that parses.
func (r *runCmd) usedToday() budget.State {
	path, _ := r.usagePath()
	b, err := os.ReadFile(path)
	if err != nil {
		return budget.State{}
	}
	st, _ := budget.ParseState(b)
	return st
}

// apiKey finds the API key: --api-key-file, $OPENAI_API_KEY, then
// api_key.txt, .openai_key and .env in the working directory.
func apiKey(file string) (string, error) {
	if file != "" {
		k := firstLine(file)
		if k == "" {
			return "", fmt.Errorf("--api-key-file %s: no key in it", file)
		}
		return k, nil
	}
	if k := strings.TrimSpace(os.Getenv("OPENAI_API_KEY")); k != "" {
		return k, nil
	}
	for _, f := range []string{"api_key.txt", ".openai_key"} {
		if k := firstLine(f); k != "" {
			return k, nil
		}
	}
	if k := dotenv(".env", "OPENAI_API_KEY"); k != "" {
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

// dotenv reads key from a .env file's KEY=value lines.
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
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

// defaultUsageFile is $XDG_STATE_HOME/gptbatch/usage.md, else
// ~/.local/state/gptbatch/usage.md.
func defaultUsageFile() (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no usage file: set --usage-file or GPTBATCH_USAGE_FILE: %w", err)
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "gptbatch", "usage.md"), nil
}
