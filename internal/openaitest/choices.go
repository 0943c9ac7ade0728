package openaitest

import (
	"fmt"
	"strings"
)

// The answers a client must not drop, beyond one choice of text:
//
//   - with "n" > 1, choice i (from 0) after the first answers
//     "answer <i+1>: " and the text, so that the choices differ and their
//     order shows; the usage counts every choice's tokens;
//   - with "logprobs": true, each choice has a logprobs object with an
//     entry per token of its content (logprob -i/10 for token i);
//   - a last user message containing "__refusal__" is refused: every
//     choice has content null and refusal RefusalMessage, counted as its
//     completion tokens;
//   - a last user message containing "__content_filter__" is stopped by
//     the content filter: every choice's content is cut to nothing, with
//     finish_reason "content_filter".

// RefusalMessage is the refusal the fake answers to "__refusal__".
const RefusalMessage = "I'm sorry, but I can't help with that."

// ChoiceText is the content of choice i (from 0) of an answer to prompt,
// before it is cut to the request's output cap.
func ChoiceText(prompt string, i int) string {
	if i == 0 {
		return "answer: " + prompt
	}
	return fmt.Sprintf("answer %d: %s", i+1, prompt)
}

// logprob is one token's entry in a choice's logprobs.
type logprob struct {
	Token       string     `json:"token"`
	Logprob     float64    `json:"logprob"`
	Bytes       []int      `json:"bytes"`
	TopLogprobs []struct{} `json:"top_logprobs"`
}

// vary makes the choices of resp, an answer to req whose choices are all
// the first one's text, what the rules above say, and sets the usage's
// completion tokens to what they hold. It leaves tool calls alone.
func vary(req *request, enc *encoder, resp *response, maxOut int) {
	refuse := strings.Contains(req.lastUserText(), "__refusal__") || req.shaped != nil && req.shaped.refused
	if len(resp.Choices) == 0 || (resp.Choices[0].Message.Content == nil && !refuse) {
		return
	}
	total := 0
	for i := range resp.Choices {
		ch := &resp.Choices[i]
		var text string
		if refuse {
			text = RefusalMessage
			ch.Message.Content, ch.Message.Refusal = nil, &text
			ch.FinishReason = "stop"
		} else {
			t, _, cut := truncate(enc, req.choiceText(i), maxOut)
			text = t
			ch.Message.Content = &text
			ch.FinishReason = "stop"
			switch {
			case strings.Contains(req.lastUserText(), "__content_filter__"):
				text = ""
				ch.FinishReason = "content_filter"
			case cut || req.shaped != nil && req.shaped.cut:
				ch.FinishReason = "length"
			}
		}
		toks := enc.tokens(text)
		total += len(toks)
		if req.Logprobs {
			lp := struct {
				Content []logprob `json:"content"`
				Refusal []logprob `json:"refusal"`
			}{}
			entries := make([]logprob, len(toks))
			for j, tok := range toks {
				s := enc.decode([]int{tok})
				b := make([]int, len(s))
				for k := range len(s) {
					b[k] = int(s[k])
				}
				entries[j] = logprob{Token: s, Logprob: -float64(j) / 10, Bytes: b, TopLogprobs: []struct{}{}}
			}
			if refuse {
				lp.Refusal = entries
			} else {
				lp.Content = entries
			}
			ch.Logprobs = mustJSON(lp)
		}
	}
	resp.Usage.CompletionTokens = total
	resp.Usage.TotalTokens = resp.Usage.PromptTokens + total
}
