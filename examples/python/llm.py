# An LLM stand-in for examples/llm_gateway.rs: a model that streams tokens,
# one every few milliseconds, spending its time waiting (as a call to a
# model server does), not computing.
import asyncio


async def generate(prompt, tokens=20, token_ms=5):
    for i in range(tokens):
        await asyncio.sleep(token_ms / 1000)
        yield "%s-%d" % (prompt, i)
