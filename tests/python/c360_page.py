#!/usr/bin/env python3
"""Drive the customer 360 page of `funnel serve` in headless Chromium (selenium + Debian's
chromium-driver), as a user would:

0. without credentials the page answers 401 with a Basic challenge (a browser asks for them);
   the browser then sends the API token (FUNNEL_API_TOKEN) with every request;
1. open the page and wait for customers;
2. search for a city no customer has yet, then produce a profile there through the page's
   own server (POST /topics/...) and wait, without reloading, for it to appear (live refresh);
3. clear the search, click the filter button of segment SEGMENT and read the rows.

Prints one JSON object with what the page showed.
"""
import argparse
import json
import os
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys


def wait(what, f, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.2)
    raise TimeoutError(what)


def rows(driver):
    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, "#customers tr"):
        tds = tr.find_elements(By.TAG_NAME, "td")
        # Stage and segment by their class, so a new column (propensity) moves nothing.
        by_class = {td.get_attribute("class"): td.text for td in tds if td.get_attribute("class")}
        out.append({"customer_id": tds[0].text, "city": tds[2].text, "stage": by_class.get("stage"), "segment": by_class.get("segment")})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--profile-topic", required=True)
    ap.add_argument("--segment", required=True)
    args = ap.parse_args()
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    token = os.environ["FUNNEL_API_TOKEN"]
    result = {}
    try:
        urllib.request.urlopen(args.url + "/", timeout=30)
        result["without_credentials"] = 200
    except urllib.error.HTTPError as e:
        result["without_credentials"] = e.code
        result["challenge"] = e.headers.get("WWW-Authenticate")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    # What a user types into the browser's credentials prompt, sent with every request.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": "Bearer " + token}})
    try:
        driver.get(args.url)
        wait("customers on the page", lambda: rows(driver))
        result["first_rows"] = len(rows(driver))

        search = driver.find_element(By.ID, "search")
        search.send_keys("livetown")
        wait("search applied", lambda: "q=livetown" in (driver.find_element(By.TAG_NAME, "body").get_attribute("data-key") or ""))
        result["before_live"] = len(rows(driver))
        body = {"records": [{"key": {"customer_id": "live-1"},
                             "value": {"customer_id": "live-1", "first_name": "Lia", "city": "Livetown",
                                       "state": "SP", "attributes": {}, "source": "http"}}]}
        req = urllib.request.Request(f"{args.url}/topics/{args.profile_topic}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json", "authorization": "Bearer " + token},
                                     method="POST")
        urllib.request.urlopen(req, timeout=30).read()
        t0 = time.time()
        live = wait("the new customer without a reload", lambda: [r for r in rows(driver) if r["city"] == "Livetown"], timeout=90)
        result["live_rows"] = live
        result["live_seconds"] = round(time.time() - t0, 2)

        search.send_keys(Keys.CONTROL, "a")
        search.send_keys(Keys.DELETE)
        wait("search cleared", lambda: (driver.find_element(By.TAG_NAME, "body").get_attribute("data-key") or "").startswith("q=&"))
        button = wait("segment button", lambda: driver.find_elements(By.CSS_SELECTOR, f'#segments button[data-segment="{args.segment}"]'))[0]
        button.click()
        wait("segment filter applied", lambda: f"segment={args.segment}" in (driver.find_element(By.TAG_NAME, "body").get_attribute("data-key") or ""))
        shown = rows(driver)
        result["segment"] = args.segment
        result["segment_rows"] = len(shown)
        result["segment_cells"] = sorted({r["segment"] for r in shown})
        result["segment_total"] = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-total"))
        result["button_active"] = "active" in (driver.find_elements(By.CSS_SELECTOR, f'#segments button[data-segment="{args.segment}"]')[0].get_attribute("class") or "")
    finally:
        driver.quit()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
