"""The reference for `bridge.syntax.a1111.prompt_schedule`: A1111's schedule grammar (modules/prompt_parser.py,
`schedule_parser`) run by lark's Earley parser, as A1111 runs it, and A1111 1.6's step rule. Test and
benchmark only: Earley takes about 0.36 s per bracketed corpus prompt, too slow to serve."""
import lark
GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""
P = lark.Lark(GRAMMAR)
def edit_step(when, steps):
    v = float(when)
    return min(steps, int(v * steps if "." in when else v))
def ref_schedule(text, steps):
    try:
        tree = P.parse(text)
    except lark.exceptions.LarkError:
        return [(steps, text)]
    whens = {}
    ends = {steps}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            whens[id(node)] = edit_step(str(node.children[-2]), steps)
            if whens[id(node)] >= 1:
                ends.add(whens[id(node)])
        elif node.data == "alternate":
            ends.update(range(1, steps + 1))
    def at(node, step):
        if node is None:
            return ""
        if not isinstance(node, lark.Tree):
            return str(node)
        if node.data == "scheduled":
            return at(node.children[0] if step <= whens[id(node)] else node.children[1], step)
        if node.data == "alternate":
            return at(node.children[(step - 1) % len(node.children)], step)
        return "".join(at(c, step) for c in node.children)
    return [(e, at(tree, e)) for e in sorted(ends)]
