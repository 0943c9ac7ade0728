// Command gptbatch pushes a batch of prompts through the OpenAI API (or any
// compatible endpoint) within shared rate and budget limits: JSONL prompts
// on stdin, one JSONL result per line on stdout, in input order.
//
// The commands are in package internal/cli; docs/ is the manual.
package main

import (
	"os"

	"github.com/gptbatch/gptbatch/internal/cli"
)

func main() {
	ctx, abort := cli.Signals(os.Stderr)
	os.Exit(cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, cli.Seams{Abort: abort}))
}
