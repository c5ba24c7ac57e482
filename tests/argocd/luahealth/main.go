// luahealth runs an ArgoCD resource health check (health.lua) on its test cases (health_test.yaml) in the
// Lua engine ArgoCD itself uses: gopher-lua, set up as argo-cd's util/lua does for a health script from
// argocd-cm. That is a state without the standard libraries (useOpenLibs is off for custom scripts), then
// only the package, base and table libraries and os.time/os.date through require("os"); the object is passed
// as the global `obj` (JSON numbers as Lua numbers), the script must return a table, its JSON encoding
// (gopher-json, as ArgoCD) is the health status, and a status outside ArgoCD's set reads as Unknown.
//
//	luahealth <folder with health.lua and health_test.yaml>
//
// Prints one JSON line per case and exits 1 when any case differs or fails.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

type health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

type testCase struct {
	HealthStatus health `json:"healthStatus"`
	InputPath    string `json:"inputPath"`
}

var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

// safeOs is the os table ArgoCD gives scripts: the time, nothing that exits or touches files.
var safeOs = map[string]lua.LGFunction{
	"time": func(l *lua.LState) int {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	},
	"date": func(l *lua.LState) int {
		l.Push(lua.LString(time.Now().UTC().Format(time.RFC3339)))
		return 1
	},
}

func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []interface{}:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func evaluate(script string, obj map[string]interface{}) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	libs := []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}}
	for _, lib := range libs {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return health{}, err
		}
	}
	// ArgoCD's "safe os" registers its functions under the table library's name, so there is no global
	// `os`; `require("os")` gives them.
	l.RegisterModule(lua.TabLibName, safeOs)
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), safeOs))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return health{}, err
	}
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return health{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	encoded, err := luajson.Encode(ret)
	if err != nil {
		return health{}, err
	}
	var h health
	if err := json.Unmarshal(encoded, &h); err != nil {
		return health{}, err
	}
	if !validStatus[h.Status] {
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: luahealth <folder with health.lua and health_test.yaml>")
		os.Exit(2)
	}
	dir := os.Args[1]
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var suite struct {
		Tests []testCase `json:"tests"`
	}
	if err := yaml.Unmarshal(raw, &suite); err != nil || len(suite.Tests) == 0 {
		fmt.Fprintf(os.Stderr, "%s: no test cases (%v)\n", filepath.Join(dir, "health_test.yaml"), err)
		os.Exit(2)
	}
	failed := 0
	out := json.NewEncoder(os.Stdout)
	for _, tc := range suite.Tests {
		result := map[string]interface{}{"inputPath": tc.InputPath, "want": tc.HealthStatus}
		var obj map[string]interface{}
		input, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
		if err == nil {
			err = yaml.Unmarshal(input, &obj)
		}
		var got health
		if err == nil {
			got, err = evaluate(string(script), obj)
		}
		ok := err == nil && got == tc.HealthStatus
		if err != nil {
			result["error"] = err.Error()
		} else {
			result["got"] = got
		}
		result["ok"] = ok
		if !ok {
			failed++
		}
		_ = out.Encode(result)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
