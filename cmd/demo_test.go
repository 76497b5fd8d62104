package cmd

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

// TestDemo runs `bridge demo` in-process: simulated Chatwoot and Dify, and
// the real serve (startServer on 127.0.0.1:0) between them.
func TestDemo(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Chdir(t.TempDir())
	var out, errOut bytes.Buffer
	root := NewRoot(IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, viper.New())
	root.SetArgs([]string{"demo"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("demo failed: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	s := out.String()
	for _, want := range []string{
		`✓ reply: "Answer to: Hi! Where is my order #1234?"`,
		`✓ reply: "Earlier you asked: \"Hi! Where is my order #1234?\""`,
		"Stopped: handed to a human: customer asked for a human",
		`✓ reply: "Answer to: Hello from WhatsApp: do you ship to Cairo? (delivered on WhatsApp)"`,
		`+ image mug.jpg (image/jpeg)`,
		`(I received: image \"mug.jpg\")`,
		`WhatsApp customer: voice note voice.ogg (audio/ogg)`,
		`✓ reply: "Answer to: Can I pay on delivery? (delivered on WhatsApp)"`,
		"Dify kept one conversation",
		"Demo passed.",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "\x1b[") {
		t.Error("colour codes in output to a buffer")
	}
}
