// The packed package's typings under `tsc --strict`: typings.ts (an app using every part of the
// API, with lines that must stay errors) and every ```ts snippet of the shipped README, each as
// a module of its own. Also: no `any` in the public typings, and no README link that leaves
// the tarball (other than to the web).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const here = import.meta.dirname;
const pkg = join(here, "node_modules", "gridsocket");
const tsc = join(here, "node_modules", ".bin", "tsc");

test("typings.ts and the README's TypeScript snippets compile with --strict", () => {
  const readme = readFileSync(join(pkg, "README.md"), "utf8");
  const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(snippets.length >= 8, `the README has TypeScript examples (${snippets.length})`);
  const dir = join(here, ".readme-snippets");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  // What the snippets take as given, as an app would have it.
  writeFileSync(
    join(dir, "given.d.ts"),
    "declare const accessToken: string;\ndeclare const url: string;\n",
  );
  const files = snippets.map((code, i) => {
    const file = join(dir, `snippet-${i + 1}.ts`);
    writeFileSync(file, `${code}\nexport {};\n`);
    return file;
  });
  try {
    execFileSync(
      tsc,
      ["--noEmit", "--strict", "--target", "es2022", "--lib", "esnext,dom", "--module", "nodenext",
        "--moduleResolution", "nodenext", "--types", "node", join(dir, "given.d.ts"), join(here, "typings.ts"), ...files],
      { cwd: here, stdio: "pipe" },
    );
  } catch (e) {
    assert.fail(`tsc:\n${e.stdout}${e.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the public typings have no any, and the README no link out of the tarball", () => {
  const dts = readFileSync(join(pkg, "index.d.ts"), "utf8")
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/.*$/gm, "");
  assert.doesNotMatch(dts, /\bany\b/);
  const readme = readFileSync(join(pkg, "README.md"), "utf8");
  const links = [...readme.matchAll(/\]\(([^)]+)\)/g)].map((m) => m[1]);
  const shipped = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).files;
  for (const link of links) {
    if (/^https?:\/\//.test(link) || link.startsWith("#")) continue;
    assert.ok(shipped.includes(link.replace(/^\.\//, "").split("#")[0]), `README link to ${link} is not in the tarball`);
  }
});
